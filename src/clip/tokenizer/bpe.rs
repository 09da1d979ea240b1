//! The byte-level BPE of open_clip's `SimpleTokenizer`: the vocabulary built from the merge list
//! (`__init__`), the merge loop on one regex piece (`bpe`), and the inverse byte map (`decode`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{is_py_whitespace, END_OF_WORD, EOT_STR, NUM_MERGES, SOT_STR, VOCAB_SIZE};

/// The BPE cache is a pure speed-up (as in Python); it is cleared when it grows past this.
const CACHE_CAPACITY: usize = 1 << 16;

/// The vocabulary and merge ranks of `SimpleTokenizer`, with ids in place of symbol strings.
pub struct Bpe {
    /// id → symbol string (`SimpleTokenizer.decoder`).
    vocab: Vec<String>,
    /// byte → id of its `bytes_to_unicode` symbol (0..255).
    byte_id: [u32; 256],
    /// byte → id of its symbol + `</w>` (256..511), for the last byte of a piece.
    byte_id_eow: [u32; 256],
    /// `bytes_to_unicode()` itself, for [`Bpe::decode`].
    byte_decoder: HashMap<char, u8>,
    /// `(left id, right id)` → `(rank, merged id)`, from `bpe_ranks` and `encoder`.
    pub(super) merges: HashMap<(u32, u32), (u32, u32)>,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl std::fmt::Debug for Bpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bpe")
            .field("vocab_size", &self.vocab.len())
            .field("merges", &self.merges.len())
            .finish_non_exhaustive()
    }
}

/// GPT-2 / CLIP `bytes_to_unicode()`: returns `(bs, cs)` in dict order, i.e. `bs[i]` is the
/// byte whose symbol has id `i` and `cs[i]` its character.
fn bytes_to_unicode() -> ([u8; 256], [char; 256]) {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs: Vec<u32> = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut b_out = [0u8; 256];
    let mut c_out = ['\0'; 256];
    for i in 0..256 {
        b_out[i] = bs[i] as u8;
        // All values are < 0x144, valid scalar values.
        c_out[i] = char::from_u32(cs[i]).unwrap_or('\u{FFFD}');
    }
    (b_out, c_out)
}

impl Bpe {
    /// Builds the vocabulary from the uncompressed vocabulary text (`SimpleTokenizer.__init__`).
    pub fn from_merges_text(text: &str) -> std::io::Result<Self> {
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < NUM_MERGES + 1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("BPE vocabulary has {} lines, need at least {}", lines.len(), NUM_MERGES + 1),
            ));
        }
        let merges: Vec<Vec<&str>> = lines[1..=NUM_MERGES]
            .iter()
            .map(|l| l.split(is_py_whitespace).filter(|s| !s.is_empty()).collect())
            .collect();

        let (bs, cs) = bytes_to_unicode();
        let mut vocab: Vec<String> = Vec::with_capacity(VOCAB_SIZE);
        vocab.extend(cs.iter().map(|c| c.to_string()));
        vocab.extend(cs.iter().map(|c| format!("{c}{END_OF_WORD}")));
        vocab.extend(merges.iter().map(|m| m.concat()));
        vocab.push(SOT_STR.to_string());
        vocab.push(EOT_STR.to_string());

        // encoder = dict(zip(vocab, range(len(vocab)))): a later duplicate wins.
        let mut encoder: HashMap<&str, u32> = HashMap::with_capacity(vocab.len());
        for (i, s) in vocab.iter().enumerate() {
            encoder.insert(s.as_str(), i as u32);
        }
        // bpe_ranks = dict(zip(merges, range(len(merges)))): a later duplicate wins.
        let mut ranks: HashMap<(&str, &str), u32> = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            if let [a, b] = m.as_slice() {
                ranks.insert((*a, *b), rank as u32);
            }
            // Entries that are not pairs can never match a pair of symbols (as in Python).
        }
        let mut merge_ids: HashMap<(u32, u32), (u32, u32)> = HashMap::with_capacity(ranks.len());
        for ((a, b), rank) in ranks {
            // Every symbol of a word is a vocabulary string, so a merge whose parts are not in the
            // vocabulary can never fire.
            if let (Some(&ia), Some(&ib), Some(&im)) =
                (encoder.get(a), encoder.get(b), encoder.get(format!("{a}{b}").as_str()))
            {
                merge_ids.insert((ia, ib), (rank, im));
            }
        }

        // Ids follow the symbol strings through `encoder` (for the real file: byte bs[i] has
        // id i, and i + 256 with "</w>").
        let mut byte_id = [0u32; 256];
        let mut byte_id_eow = [0u32; 256];
        let mut byte_decoder = HashMap::with_capacity(256);
        for i in 0..256 {
            byte_id[bs[i] as usize] = encoder.get(vocab[i].as_str()).copied().unwrap_or(i as u32);
            byte_id_eow[bs[i] as usize] = encoder.get(vocab[i + 256].as_str()).copied().unwrap_or(i as u32 + 256);
            byte_decoder.insert(cs[i], bs[i]);
        }

        Ok(Bpe { vocab, byte_id, byte_id_eow, byte_decoder, merges: merge_ids, cache: Mutex::new(HashMap::new()) })
    }

    /// Number of ids (49408).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The symbol string of an id (`SimpleTokenizer.decoder`), e.g. `"cat</w>"`.
    pub fn symbol(&self, id: i64) -> Option<&str> {
        usize::try_from(id).ok().and_then(|i| self.vocab.get(i)).map(String::as_str)
    }

    /// `SimpleTokenizer.bpe` on one regex piece, returning ids. The piece is non-empty.
    pub fn encode_piece(&self, piece: &str) -> Vec<u32> {
        if let Some(hit) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(piece) {
            return hit.clone();
        }
        // word = tuple(token[:-1]) + (token[-1] + '</w>',)
        let bytes = piece.as_bytes();
        let mut word: Vec<u32> = Vec::with_capacity(bytes.len());
        if let Some((&last, init)) = bytes.split_last() {
            word.extend(init.iter().map(|&b| self.byte_id[b as usize]));
            word.push(self.byte_id_eow[last as usize]);
        }
        while word.len() > 1 {
            // bigram = min(pairs, key=rank); stop when no pair is ranked.
            let mut best: Option<(u32, u32, u32, u32)> = None; // (rank, first, second, merged)
            for w in word.windows(2) {
                if let Some(&(rank, merged)) = self.merges.get(&(w[0], w[1])) {
                    if best.is_none_or(|b| rank < b.0) {
                        best = Some((rank, w[0], w[1], merged));
                    }
                }
            }
            let Some((_, first, second, merged)) = best else { break };
            word = merge_pair(&word, first, second, merged);
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(piece.to_string(), word.clone());
        word
    }

    /// `SimpleTokenizer.decode`: ids → text (`</w>` becomes a space; SOT/EOT appear literally,
    /// padding 0 appears as `!`). Unknown ids are rendered as `<unk:ID>`.
    pub fn decode(&self, ids: &[i64]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            match self.symbol(id) {
                Some(sym) => {
                    for c in sym.chars() {
                        match self.byte_decoder.get(&c) {
                            Some(&b) => bytes.push(b),
                            None => {
                                let mut buf = [0u8; 4];
                                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            }
                        }
                    }
                }
                None => bytes.extend_from_slice(format!("<unk:{id}>").as_bytes()),
            }
        }
        String::from_utf8_lossy(&bytes).replace(END_OF_WORD, " ")
    }
}

/// Every non-overlapping occurrence of the pair (`first`, `second`), left to right, replaced by
/// `merged` (the inner loop of `SimpleTokenizer.bpe`).
fn merge_pair(word: &[u32], first: u32, second: u32, merged: u32) -> Vec<u32> {
    let mut new_word = Vec::with_capacity(word.len());
    let mut i = 0;
    while i < word.len() {
        if word[i] == first && i + 1 < word.len() && word[i + 1] == second {
            new_word.push(merged);
            i += 2;
        } else {
            new_word.push(word[i]);
            i += 1;
        }
    }
    new_word
}
