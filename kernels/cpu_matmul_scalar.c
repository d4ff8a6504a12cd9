/* cpu_matmul_scalar.c - portable panel kernel: the reference every SIMD level must match. */
#include <string.h>
#include "../format/q3_format.h"
#include "cpu_panel.h"

void q3_gemv_panel_scalar(const uint16_t *panel, uint64_t cols, const float *x, float y[16])
{
    float acc[16];
    memset(acc, 0, sizeof acc);
    uint64_t col_tiles = (cols + 31) / 32;
    for (uint64_t t = 0; t < col_tiles; t++) {
        const uint16_t *tile = panel + t * 512;
        uint64_t c0 = t * 32, n = cols - c0 < 32 ? cols - c0 : 32;
        for (int r = 0; r < 16; r++) {
            float s = 0.0f;
            for (uint64_t c = 0; c < n; c++) s += q3_bf16_to_f32(tile[r * 32 + c]) * x[c0 + c];
            acc[r] += s;
        }
    }
    memcpy(y, acc, sizeof acc);
}
