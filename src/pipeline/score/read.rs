//! Stage 2, read: a thread fetches the units' images and decodes them (in parallel within a
//! batch), one batch ahead of the model.

use std::sync::mpsc;
use std::time::Instant;

use rayon::prelude::*;

use crate::data::dataset::{Dataset, WorkUnit};
use crate::data::prepare::{mask, model_input, Compat, Role};
use crate::data::shard::ImageRecord;
use crate::data::DataError;
use crate::runtime::thread_cpu::{
    register_host_thread, unregister_host_thread, HostRole, HostThread, HOST_THREAD_PREFIX,
};

use super::{ScoreError, Sizes};

/// A decoded image with its mask at the map size (`None`: unlabelled), or why it cannot be used.
pub(in crate::pipeline) struct Prepared {
    pub(super) record: ImageRecord,
    pub(in crate::pipeline) input: Result<(Vec<f32>, Option<Vec<bool>>), DataError>,
}

/// Decodes and preprocesses one image and its mask (the reader's work per image).
pub(in crate::pipeline) fn prepare(record: ImageRecord, sizes: Sizes, compat: Compat) -> Prepared {
    let input = (|| {
        let input = model_input(&record.image, &record.origin, sizes.input, compat, Role::Test)?;
        let gt = match (&record.mask, record.gt_label) {
            (Some(bytes), _) => Some(mask(bytes, &format!("{} (mask)", record.origin), sizes.map)?),
            (None, Some(1)) => {
                return Err(DataError::MissingMask {
                    image: record.origin.clone(),
                    expected: "a mask in the dataset (a defect image needs one)".into(),
                })
            }
            (None, Some(_)) => Some(vec![false; (sizes.map * sizes.map) as usize]),
            (None, None) => None,
        };
        Ok((input, gt))
    })();
    Prepared { record, input }
}

pub(super) enum Message {
    Batch(Vec<Prepared>),
    UnitEnd,
    Failed(DataError),
}

/// Stage 2: a thread that reads and decodes the units' images, one batch ahead of the model.
pub(super) struct Reader {
    messages: mpsc::IntoIter<Message>,
    /// Seconds spent reading and decoding.
    handle: Option<std::thread::JoinHandle<(f64, f64)>>,
}

impl Reader {
    pub(super) fn spawn(
        dataset: Dataset,
        units: Vec<WorkUnit>,
        batch_size: usize,
        sizes: Sizes,
        compat: Compat,
    ) -> Self {
        let (sender, receiver) = mpsc::sync_channel::<Message>(1);
        // Registered as host threads, so that `bench` does not count them as the model's
        // (`runtime::thread_cpu`); the decoders are this reader's own pool for the same reason.
        let decoders = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("{HOST_THREAD_PREFIX}decode-{i}"))
            .start_handler(|_| register_host_thread(HostRole::Decode))
            .exit_handler(|_| unregister_host_thread())
            .build()
            .expect("the operating system starts the decoding threads");
        let reader = std::thread::Builder::new().name(format!("{HOST_THREAD_PREFIX}reader"));
        let handle = reader.spawn(move || -> (f64, f64) {
            let _host = HostThread::start(HostRole::Read);
            let (mut read, mut decode) = (0.0, 0.0);
            for unit in &units {
                let started = Instant::now();
                let mut batches = match dataset.read_unit(unit, batch_size) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = sender.send(Message::Failed(e));
                        return (read, decode);
                    }
                };
                read += started.elapsed().as_secs_f64();
                loop {
                    let started = Instant::now();
                    let Some(batch) = batches.next() else { break };
                    read += started.elapsed().as_secs_f64();
                    let started = Instant::now();
                    let message = match batch {
                        Ok(records) => Message::Batch(
                            decoders.install(|| records.into_par_iter().map(|r| prepare(r, sizes, compat)).collect()),
                        ),
                        Err(e) => Message::Failed(e),
                    };
                    decode += started.elapsed().as_secs_f64();
                    let failed = matches!(message, Message::Failed(_));
                    if sender.send(message).is_err() || failed {
                        return (read, decode);
                    }
                }
                if sender.send(Message::UnitEnd).is_err() {
                    return (read, decode);
                }
            }
            (read, decode)
        });
        let handle = handle.expect("the operating system starts the reader thread");
        Self { messages: receiver.into_iter(), handle: Some(handle) }
    }

    pub(super) fn next(&mut self) -> Option<Message> {
        self.messages.next()
    }

    /// Waits for the thread; its `(read, decode)` seconds.
    pub(super) fn join(&mut self) -> Result<(f64, f64), ScoreError> {
        match self.handle.take() {
            Some(handle) => handle.join().map_err(|_| ScoreError::ReaderPanicked),
            None => Ok((0.0, 0.0)),
        }
    }
}
