/* cpu_matmul_scalar.c - portable panel kernel: the reference every SIMD level must match. */
#include <string.h>
#include "cpu_panel.h"

void q3_gemv_panel_scalar(const uint16_t *panel, uint64_t cols, const float *x, float y[PANEL_ROWS])
{
    float acc[PANEL_ROWS];
    memset(acc, 0, sizeof acc);
    uint64_t col_tiles = q3_col_tiles(cols);
    for (uint64_t t = 0; t < col_tiles; t++) {
        const uint16_t *tile = panel + t * TILE_ELEMS;
        uint64_t c0 = t * TILE_COLS, n = cols - c0 < TILE_COLS ? cols - c0 : TILE_COLS;
        for (int r = 0; r < (int)PANEL_ROWS; r++) {
            float s = 0.0f;
            for (uint64_t c = 0; c < n; c++) s += q3_bf16_to_f32(tile[r * TILE_COLS + c]) * x[c0 + c];
            acc[r] += s;
        }
    }
    memcpy(y, acc, sizeof acc);
}
