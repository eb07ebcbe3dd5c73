#!/usr/bin/env python3
"""Compile kernels/*.cu with NVRTC exactly as organdose does at start-up
(crates/kernels/src/device.rs: --fmad=false --ftz=false --prec-div=true
--prec-sqrt=true --gpu-architecture=compute_XY), without a GPU: NVRTC needs
no device. This checks the run-time path itself, including architectures a
given nvcc no longer supports (CUDA 13 dropped compute_61; NVRTC 12 has it).

Usage: ci/nvrtc-check.py LIBNVRTC.so ARCH...      e.g. ... libnvrtc.so.13 75 87 90
Exit status 1 when any kernel fails to compile.
"""
import ctypes
import glob
import os
import sys

OPTIONS = [b"--fmad=false", b"--ftz=false", b"--prec-div=true", b"--prec-sqrt=true"]


def main():
    lib = ctypes.CDLL(sys.argv[1])
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    print(f"NVRTC {major.value}.{minor.value} ({os.path.basename(sys.argv[1])})")
    failed = False
    for path in sorted(glob.glob("kernels/*.cu")):
        with open(path, "rb") as f:
            src = f.read()
        name = os.path.basename(path).encode()
        for arch in sys.argv[2:]:
            prog = ctypes.c_void_p()
            r = lib.nvrtcCreateProgram(ctypes.byref(prog), src, name, 0, None, None)
            if r != 0:
                raise SystemExit(f"nvrtcCreateProgram: {lib.nvrtcGetErrorString(r).decode()}")
            opts = OPTIONS + [f"--gpu-architecture=compute_{arch}".encode()]
            arr = (ctypes.c_char_p * len(opts))(*opts)
            r = lib.nvrtcCompileProgram(prog, len(opts), arr)
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            label = f"{name.decode():<18} compute_{arch:<4}"
            if r == 0:
                lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
                ptx = ctypes.create_string_buffer(size.value)
                lib.nvrtcGetPTX(prog, ptx)
                text = ptx.value.decode()
                entries = text.count(".entry ")
                version = next((l for l in text.splitlines() if l.startswith(".version")), "?")
                warn = " (log: " + log.value.decode().strip() + ")" if log.value.strip() else ""
                print(f"{label} ok ({entries} entry point(s), {version}){warn}")
            else:
                failed = True
                print(f"{label} FAILED: {lib.nvrtcGetErrorString(r).decode()}")
                print("    " + log.value.decode().replace("\n", "\n    "))
            lib.nvrtcDestroyProgram(ctypes.byref(prog))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
