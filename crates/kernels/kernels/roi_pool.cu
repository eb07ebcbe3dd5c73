// RoI max pooling forward (torchvision `roi_pool`), any output size (the
// paper's box head pools 28x28), over several feature levels in one launch,
// each RoI reading the level the host's LevelMapper chose (as RoIAlign).
//
// CPU twin: crates/seg/src/roi_ops.rs `RoiPool::cpu_fwd` through
// crates/seg/src/roi_heads.rs `multiscale_pool`. Bin edges use the twin's float
// operations with round-to-nearest intrinsics, so the same input pixels are
// compared and the maximum is the same float.
//
// Layout: as crates/kernels/kernels/roi_align.cu (feats, level_off, level_hw, level_scale,
// rois (K, 5), roi_level (K)); out (K, C, PH, PW), every element written: an
// empty bin gives 0 as in torchvision.

extern "C" __global__ void roi_pool_fwd(
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
        const long long h = level_hw[2 * lvl];
        const long long w = level_hw[2 * lvl + 1];
        const float scale = level_scale[lvl];
        // C++ round(): half away from zero, as roundf and Rust's f32::round.
        const long long sw = (long long)roundf(__fmul_rn(roi[1], scale));
        const long long sh = (long long)roundf(__fmul_rn(roi[2], scale));
        const long long ew = (long long)roundf(__fmul_rn(roi[3], scale));
        const long long eh = (long long)roundf(__fmul_rn(roi[4], scale));
        const long long roi_w = ew - sw + 1 > 1 ? ew - sw + 1 : 1;
        const long long roi_h = eh - sh + 1 > 1 ? eh - sh + 1 : 1;
        const float bin_h = __fdiv_rn((float)roi_h, (float)pooled_h);
        const float bin_w = __fdiv_rn((float)roi_w, (float)pooled_w);
        long long hs = (long long)floorf(__fmul_rn((float)ph, bin_h)) + sh;
        long long he = (long long)ceilf(__fmul_rn((float)(ph + 1), bin_h)) + sh;
        long long ws = (long long)floorf(__fmul_rn((float)pw, bin_w)) + sw;
        long long we = (long long)ceilf(__fmul_rn((float)(pw + 1), bin_w)) + sw;
        hs = hs < 0 ? 0 : (hs > h ? h : hs);
        he = he < 0 ? 0 : (he > h ? h : he);
        ws = ws < 0 ? 0 : (ws > w ? w : ws);
        we = we < 0 ? 0 : (we > w ? w : we);
        const bool empty = he <= hs || we <= ws;
        const float* plane =
            feats + level_off[lvl] + ((unsigned long long)b * channels + ch) * h * w;
        // -FLT_MAX, the twin's f32::MIN; NaN inputs never win a `>`, as there.
        float m = empty ? 0.0f : -3.402823466e+38f;
        for (long long yy = hs; yy < he; ++yy) {
            for (long long xx = ws; xx < we; ++xx) {
                const float v = plane[yy * w + xx];
                if (v > m) m = v;
            }
        }
        out[idx] = m;
    }
}
