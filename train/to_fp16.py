#!/usr/bin/env python3
"""Store an exported model folder's weights as float16 (half the bytes in
git; organdose widens them to f32 at load) and update its manifest.json
(sha256, bytes, dtype). Usage: python train/to_fp16.py MODEL_DIR"""
import hashlib
import json
import os
import sys

from safetensors.torch import load_file, save_file


def main():
    d = sys.argv[1]
    mpath = os.path.join(d, "manifest.json")
    with open(mpath) as f:
        man = json.load(f)
    wpath = os.path.join(d, man["weights"])
    sd = load_file(wpath)
    save_file({k: v.half().contiguous() for k, v in sd.items()}, wpath + ".tmp")
    os.replace(wpath + ".tmp", wpath)
    man["sha256"] = hashlib.sha256(open(wpath, "rb").read()).hexdigest()
    man["bytes"] = os.path.getsize(wpath)
    man["dtype"] = "float16"
    with open(mpath + ".tmp", "w") as f:
        json.dump(man, f, indent=2)
    os.replace(mpath + ".tmp", mpath)
    print(f"{wpath}: float16, {man['bytes']} bytes, sha256 {man['sha256'][:12]}...")


if __name__ == "__main__":
    main()
