"""Converts an OpenCLIP torch checkpoint (.pt release or open_clip_pytorch_model.bin) to the
safetensors file promptad loads.

    python scripts/convert_checkpoint.py IN.pt OUT.safetensors [--model ViT-B-16-plus-240]

tch cannot read most torch pickles (an OrderedDict state dict, or a training checkpoint
{'epoch', 'state_dict'}), so the conversion happens once, offline, here. Handles the 'state_dict'
wrapper and DataParallel's 'module.' prefix, drops the non-persistent 'attn_mask' buffer, and checks
the result against the key set and shapes of open_clip's model for --model before writing
(reference openclip-vit-b-16-plus-240.md §5.3). Writes atomically.
"""
import argparse
import os
import sys
import tempfile

import torch
from safetensors.torch import save_file


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="torch checkpoint (.pt, .pth or .bin)")
    parser.add_argument("output", help="safetensors file to write")
    parser.add_argument("--model", default="ViT-B-16-plus-240", help="open_clip model name the weights belong to, for the key/shape check (default %(default)s); 'none' skips the check")
    parser.add_argument("--dtype", choices=["keep", "fp32", "fp16", "bf16"], default="keep", help="store tensors in this dtype (default: as in the input)")
    args = parser.parse_args()

    try:
        sd = torch.load(args.input, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unpickling failure with the file named
        sys.exit(f"error: cannot read {args.input} as a torch checkpoint: {e}")
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        sys.exit(f"error: {args.input} holds a {type(sd).__name__}, not a state dict")
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items() if torch.is_tensor(v)}
    sd.pop("attn_mask", None)  # a buffer open_clip rebuilds; promptad builds its own mask
    cast = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(args.dtype)
    sd = {k: (v.to(cast) if cast is not None and v.is_floating_point() else v).contiguous() for k, v in sd.items()}

    if args.model != "none":
        import open_clip
        expected = {k: tuple(v.shape) for k, v in open_clip.create_model(args.model, pretrained=None).state_dict().items()}
        expected.pop("attn_mask", None)
        missing = sorted(set(expected) - set(sd))
        unexpected = sorted(set(sd) - set(expected))
        wrong = sorted(k for k in set(expected) & set(sd) if tuple(sd[k].shape) != expected[k])
        if missing or unexpected or wrong:
            lines = [f"error: {args.input} does not match open_clip model {args.model}:"]
            lines += [f"  missing {k} {list(expected[k])}" for k in missing[:12]]
            lines += [f"  unexpected {k} {list(sd[k].shape)}" for k in unexpected[:12]]
            lines += [f"  {k}: model expects {list(expected[k])}, file has {list(sd[k].shape)}" for k in wrong[:12]]
            sys.exit("\n".join(lines))

    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".partial")
    os.close(fd)
    try:
        save_file(sd, tmp, metadata={"source": os.path.basename(args.input), "model": args.model})
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {args.output}: {len(sd)} tensors, {sum(v.numel() for v in sd.values()):,} parameters")


if __name__ == "__main__":
    main()
