// RoIAlign forward with torchvision semantics (aligned flag, sampling ratio),
// over several feature levels in one launch (MultiScaleRoIAlign: each RoI reads
// the level the host's LevelMapper chose for it).
//
// CPU twin: crates/seg/src/roi_ops.rs (`RoiAlign::cpu_fwd`, `bilinear_pre`) through
// crates/seg/src/roi_heads.rs `multiscale_pool`. Every float operation below is the
// twin's, in the twin's order, with round-to-nearest intrinsics (__fmul_rn,
// __fadd_rn, ...) so the compiler cannot contract a*b+c into an FMA: the GPU
// result then equals the CPU one bit for bit, not just to a tolerance.
//
// Layout:
//   feats      all levels back to back; level l is (N, C, H_l, W_l) starting
//              at element level_off[l]
//   level_hw   (H_l, W_l) per level
//   level_scale spatial scale per level (1/4, 1/8, ...)
//   rois       (K, 5): batch index, x1, y1, x2, y2 in image pixels
//   roi_level  (K): level of each RoI
//   out        (K, C, PH, PW), every element written (grid-stride loop)
// The host checks batch indices and levels before the launch; an RoI that is
// still out of range writes 0 rather than reading outside the buffers.

struct Bilinear {
    long long pos[4];
    float w[4];
};

// torchvision's pre_calc_for_bilinear_interpolate for one sample point.
__device__ static Bilinear bilinear_pre(float y, float x, int h, int w)
{
    Bilinear b;
    if (y < -1.0f || y > (float)h || x < -1.0f || x > (float)w) {
        for (int i = 0; i < 4; ++i) {
            b.pos[i] = 0;
            b.w[i] = 0.0f;
        }
        return b;
    }
    if (y <= 0.0f) y = 0.0f;
    if (x <= 0.0f) x = 0.0f;
    int y_low = (int)y;
    int x_low = (int)x;
    int y_high, x_high;
    if (y_low >= h - 1) {
        y_low = h - 1;
        y_high = h - 1;
        y = (float)y_low;
    } else {
        y_high = y_low + 1;
    }
    if (x_low >= w - 1) {
        x_low = w - 1;
        x_high = w - 1;
        x = (float)x_low;
    } else {
        x_high = x_low + 1;
    }
    float ly = __fsub_rn(y, (float)y_low);
    float lx = __fsub_rn(x, (float)x_low);
    float hy = __fsub_rn(1.0f, ly);
    float hx = __fsub_rn(1.0f, lx);
    b.pos[0] = (long long)y_low * w + x_low;
    b.pos[1] = (long long)y_low * w + x_high;
    b.pos[2] = (long long)y_high * w + x_low;
    b.pos[3] = (long long)y_high * w + x_high;
    b.w[0] = __fmul_rn(hy, hx);
    b.w[1] = __fmul_rn(hy, lx);
    b.w[2] = __fmul_rn(ly, hx);
    b.w[3] = __fmul_rn(ly, lx);
    return b;
}

// Rust's `f as usize` for a sample count: NaN and negatives saturate to 0.
__device__ static int grid_count(float v)
{
    float c = ceilf(v);
    if (!(c > 0.0f)) return 0;
    if (c > 1048576.0f) return 1048576;
    return (int)c;
}

extern "C" __global__ void roi_align_fwd(
    const float* __restrict__ feats,
    const unsigned long long* __restrict__ level_off,
    const int* __restrict__ level_hw,
    const float* __restrict__ level_scale,
    int n_levels,
    const float* __restrict__ rois,
    const int* __restrict__ roi_level,
    int n_rois,
    int n_batch,
    int channels,
    int pooled_h,
    int pooled_w,
    int sampling_ratio,
    int aligned,
    float* __restrict__ out)
{
    const unsigned long long total =
        (unsigned long long)n_rois * channels * pooled_h * pooled_w;
    const unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long idx = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         idx < total; idx += step) {
        const int pw = (int)(idx % pooled_w);
        const int ph = (int)((idx / pooled_w) % pooled_h);
        const int ch = (int)((idx / ((unsigned long long)pooled_w * pooled_h)) % channels);
        const int r = (int)(idx / ((unsigned long long)pooled_w * pooled_h * channels));
        const float* roi = rois + (long long)r * 5;
        const int b = (int)roi[0];
        const int lvl = roi_level[r];
        if (b < 0 || b >= n_batch || lvl < 0 || lvl >= n_levels) {
            out[idx] = 0.0f;
            continue;
        }
        const int h = level_hw[2 * lvl];
        const int w = level_hw[2 * lvl + 1];
        const float scale = level_scale[lvl];
        const float offset = aligned ? 0.5f : 0.0f;
        const float start_w = __fsub_rn(__fmul_rn(roi[1], scale), offset);
        const float start_h = __fsub_rn(__fmul_rn(roi[2], scale), offset);
        const float end_w = __fsub_rn(__fmul_rn(roi[3], scale), offset);
        const float end_h = __fsub_rn(__fmul_rn(roi[4], scale), offset);
        float roi_w = __fsub_rn(end_w, start_w);
        float roi_h = __fsub_rn(end_h, start_h);
        if (!aligned) {
            roi_w = fmaxf(roi_w, 1.0f);
            roi_h = fmaxf(roi_h, 1.0f);
        }
        const float bin_h = __fdiv_rn(roi_h, (float)pooled_h);
        const float bin_w = __fdiv_rn(roi_w, (float)pooled_w);
        const int grid_h = sampling_ratio > 0 ? sampling_ratio : grid_count(bin_h);
        const int grid_w = sampling_ratio > 0 ? sampling_ratio : grid_count(bin_w);
        const int n_samples = grid_h * grid_w;
        const float count = (float)(n_samples > 1 ? n_samples : 1);
        const float* plane =
            feats + level_off[lvl] + ((unsigned long long)b * channels + ch) * h * w;
        float acc = 0.0f;
        for (int iy = 0; iy < grid_h; ++iy) {
            // start + p*bin + (i + 0.5)*bin/grid, left to right as the twin.
            const float yy = __fadd_rn(
                __fadd_rn(start_h, __fmul_rn((float)ph, bin_h)),
                __fdiv_rn(__fmul_rn(__fadd_rn((float)iy, 0.5f), bin_h), (float)grid_h));
            for (int ix = 0; ix < grid_w; ++ix) {
                const float xx = __fadd_rn(
                    __fadd_rn(start_w, __fmul_rn((float)pw, bin_w)),
                    __fdiv_rn(__fmul_rn(__fadd_rn((float)ix, 0.5f), bin_w), (float)grid_w));
                const Bilinear p = bilinear_pre(yy, xx, h, w);
                float s = __fmul_rn(p.w[0], plane[p.pos[0]]);
                s = __fadd_rn(s, __fmul_rn(p.w[1], plane[p.pos[1]]));
                s = __fadd_rn(s, __fmul_rn(p.w[2], plane[p.pos[2]]));
                s = __fadd_rn(s, __fmul_rn(p.w[3], plane[p.pos[3]]));
                acc = __fadd_rn(acc, s);
            }
        }
        out[idx] = __fdiv_rn(acc, count);
    }
}
