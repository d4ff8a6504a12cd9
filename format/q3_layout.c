/* q3_layout.c - the R16C32 tiled layout and BF16/F16 conversions (spec.md 8, 9). */
#include <string.h>
#include "q3_format.h"

uint64_t q3_layout_elems(uint32_t layout, uint64_t rows, uint64_t cols)
{
    if (layout == Q3_LAYOUT_R16C32) {
        uint64_t panels = (rows + Q3_TILE_ROWS - 1) / Q3_TILE_ROWS;
        uint64_t col_tiles = (cols + Q3_TILE_COLS - 1) / Q3_TILE_COLS;
        return panels * Q3_TILE_ROWS * col_tiles * Q3_TILE_COLS;
    }
    return rows * cols;
}

void q3_layout_position(uint32_t layout, uint64_t cols, uint64_t index, uint64_t *row, uint64_t *col)
{
    if (layout != Q3_LAYOUT_R16C32) {
        *row = index / cols;
        *col = index % cols;
        return;
    }
    uint64_t col_tiles = (cols + Q3_TILE_COLS - 1) / Q3_TILE_COLS;
    uint64_t tile = index / (Q3_TILE_ROWS * Q3_TILE_COLS), in_tile = index % (Q3_TILE_ROWS * Q3_TILE_COLS);
    *row = tile / col_tiles * Q3_TILE_ROWS + in_tile / Q3_TILE_COLS;
    *col = tile % col_tiles * Q3_TILE_COLS + in_tile % Q3_TILE_COLS;
}

void q3_tile_pack(uint32_t layout, const uint16_t *src, uint64_t rows, uint64_t cols, uint16_t *dst)
{
    if (layout != Q3_LAYOUT_R16C32) {
        memcpy(dst, src, rows * cols * sizeof *src);
        return;
    }
    memset(dst, 0, q3_layout_elems(layout, rows, cols) * sizeof *dst);
    for (uint64_t r = 0; r < rows; r++) {
        const uint16_t *row = src + r * cols;
        /* Whole 32-column pieces of a row are contiguous in both layouts. */
        for (uint64_t c = 0; c < cols; c += Q3_TILE_COLS) {
            uint64_t n = cols - c < Q3_TILE_COLS ? cols - c : Q3_TILE_COLS;
            memcpy(dst + q3_r16c32_index(cols, r, c), row + c, n * sizeof *src);
        }
    }
}

void q3_tile_unpack(uint32_t layout, const uint16_t *src, uint64_t rows, uint64_t cols, uint16_t *dst)
{
    if (layout != Q3_LAYOUT_R16C32) {
        memcpy(dst, src, rows * cols * sizeof *src);
        return;
    }
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t c = 0; c < cols; c += Q3_TILE_COLS) {
            uint64_t n = cols - c < Q3_TILE_COLS ? cols - c : Q3_TILE_COLS;
            memcpy(dst + r * cols + c, src + q3_r16c32_index(cols, r, c), n * sizeof *src);
        }
}

void q3_tensor_row_bf16(const q3_tensor *t, uint64_t row, uint16_t *dst)
{
    uint64_t cols = t->shape[1];
    if (t->layout != Q3_LAYOUT_R16C32) {
        memcpy(dst, t->data + row * cols, cols * sizeof *dst);
        return;
    }
    for (uint64_t c = 0; c < cols; c += Q3_TILE_COLS) {
        uint64_t n = cols - c < Q3_TILE_COLS ? cols - c : Q3_TILE_COLS;
        memcpy(dst + c, t->data + q3_r16c32_index(cols, row, c), n * sizeof *dst);
    }
}

float q3_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf or NaN, payload kept */
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        /* Subnormal half: normalize into a binary32 normal. */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400u));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    union { uint32_t u; float f; } v = { bits };
    return v.f;
}
