#include "base/half.h"

#include <omp.h>

void sd_f16_to_f32_n(const uint16_t *s, float *d, size_t n)
{
    for (size_t i = 0; i < n; i++) d[i] = sd_f16_to_f32(s[i]);
}
void sd_f32_to_f16_n(const float *s, uint16_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) d[i] = sd_f32_to_f16(s[i]);
}
void sd_bf16_to_f32_n(const uint16_t *s, float *d, size_t n)
{
    for (size_t i = 0; i < n; i++) d[i] = sd_bf16_to_f32(s[i]);
}
void sd_f32_to_bf16_n(const float *s, uint16_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) d[i] = sd_f32_to_bf16(s[i]);
}
void sd_f8e4m3_to_f32_n(const uint8_t *s, float *d, size_t n)
{
    for (size_t i = 0; i < n; i++) d[i] = sd_f8e4m3_to_f32(s[i]);
}
void sd_f32_to_f8e4m3_n(const float *s, uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) d[i] = sd_f32_to_f8e4m3(s[i]);
}

void sd_round_half_n(float *x, size_t n, int bf16)
{
    int par = n >= ((size_t)1 << 16) && !omp_in_parallel();
    if (bf16) {
        #pragma omp parallel for schedule(static) if (par)
        for (size_t i = 0; i < n; i++) x[i] = sd_round_bf16(x[i]);
    } else {
        #pragma omp parallel for schedule(static) if (par)
        for (size_t i = 0; i < n; i++) x[i] = sd_round_f16(x[i]);
    }
}
