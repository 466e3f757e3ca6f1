/* quant_int8.c — per-output-channel INT8 for safetensors/PyTorch outputs
 * (see q_int8_rows in quant.h). */
#include <math.h>

#include "quant.h"

void q_int8_rows(const float *w, int64_t rows, int64_t cols, int asym, void *q, float *scale,
                 uint8_t *zero_point) {
    for (int64_t r = 0; r < rows; r++) {
        const float *x = w + r * cols;
        float lo = x[0], hi = x[0];
        for (int64_t j = 1; j < cols; j++) {
            if (x[j] < lo) lo = x[j];
            if (x[j] > hi) hi = x[j];
        }
        if (!asym) {
            const float amax = fmaxf(fabsf(lo), fabsf(hi));
            const float s = amax > 0 ? amax / 127.0f : 1.0f;
            int8_t *o = (int8_t *)q + r * cols;
            for (int64_t j = 0; j < cols; j++) {
                float v = roundf(x[j] / s);
                o[j] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
            }
            scale[r] = s;
        } else {
            /* the range must hold 0 exactly so zero weights stay zero */
            if (lo > 0) lo = 0;
            if (hi < 0) hi = 0;
            const float s = hi > lo ? (hi - lo) / 255.0f : 1.0f;
            float zp = roundf(-lo / s);
            zp = zp < 0 ? 0 : zp > 255 ? 255 : zp;
            uint8_t *o = (uint8_t *)q + r * cols;
            for (int64_t j = 0; j < cols; j++) {
                float v = roundf(x[j] / s) + zp;
                o[j] = (uint8_t)(v > 255 ? 255 : v < 0 ? 0 : v);
            }
            scale[r] = s;
            zero_point[r] = (uint8_t)zp;
        }
    }
}
