// One 1-D pass of the separable 3-D Gaussian PSF: dst = src convolved along
// one axis with `taps` (odd length, centre at taps[n_taps / 2]). The host runs
// it once per axis (x, then y, then z), ping-ponging two buffers, with taps
// made by `gaussian_taps(sigma_mm, spacing_mm[axis])`: anisotropic voxels
// come in through the taps, not here.
//
// CPU twin: crates/dose/src/psf.rs (`blur_axis`, `gaussian_blur_3d`). Same tap
// order, f32 weights, f32 accumulation acc += w * v with round-to-nearest
// intrinsics (no FMA contraction), so results match voxel by voxel.
//
// Boundary (psf.rs `Boundary`): 0 = Zero (taps outside the grid are skipped,
// i.e. read 0), 1 = Clamp (they read the nearest edge voxel).
//
// Layout: x fastest, index i + nx*(j + ny*k). Every element of dst is written
// (grid-stride loop over nx*ny*nz).

extern "C" __global__ void gaussian_pass(
    const float* __restrict__ src,
    float* __restrict__ dst,
    unsigned long long nx,
    unsigned long long ny,
    unsigned long long nz,
    int axis,
    const float* __restrict__ taps,
    int n_taps,
    int boundary)
{
    const unsigned long long total = nx * ny * nz;
    const unsigned long long stride = axis == 0 ? 1ULL : (axis == 1 ? nx : nx * ny);
    const long long len = (long long)(axis == 0 ? nx : (axis == 1 ? ny : nz));
    const long long radius = n_taps / 2;
    const unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long l = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         l < total; l += step) {
        const long long pos = (long long)((l / stride) % (unsigned long long)len);
        const unsigned long long line_start = l - (unsigned long long)pos * stride;
        float acc = 0.0f;
        for (int ti = 0; ti < n_taps; ++ti) {
            long long q = pos + ti - radius;
            if (q < 0 || q >= len) {
                if (boundary == 0) continue;
                q = q < 0 ? 0 : len - 1;
            }
            acc = __fadd_rn(acc, __fmul_rn(taps[ti], src[line_start + (unsigned long long)q * stride]));
        }
        dst[l] = acc;
    }
}
