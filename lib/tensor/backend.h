/* Internal: backend entry points. ops.c validates arguments (shapes, dtypes, devices) and then
 * calls the backend function of the same name and signature: sd_cpu_* (lib/tensor/cpu_*.c), and
 * sd_cuda_* (lib/tensor/cuda/ops_*.cu). Backends may assume validated arguments. */
#ifndef SD_TENSOR_BACKEND_H
#define SD_TENSOR_BACKEND_H

#include "tensor/ops.h"

int sd_cpu_fill(sd_ctx *ctx, sd_tensor *y, float value);
int sd_cpu_convert(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x);
int sd_cpu_permute(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const int *perm);
int sd_cpu_permute_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const int *perm);
int sd_cpu_add(sd_ctx *ctx, sd_tensor *y, const sd_tensor *a, const sd_tensor *b);
int sd_cpu_mul(sd_ctx *ctx, sd_tensor *y, const sd_tensor *a, const sd_tensor *b);
int sd_cpu_mul_bwd(sd_ctx *ctx, sd_tensor *da, sd_tensor *db, const sd_tensor *dy, const sd_tensor *a, const sd_tensor *b);
int sd_cpu_axpby(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x, float beta);
int sd_cpu_sum_to(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x);
int sd_cpu_linear(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b);
int sd_cpu_linear_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy, const sd_tensor *x, const sd_tensor *w);
int sd_cpu_matmul(sd_ctx *ctx, sd_tensor *c, const sd_tensor *a, int trans_a, const sd_tensor *b, int trans_b, float alpha, float beta);
int sd_cpu_conv2d(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b, sd_conv2d_geom g);
int sd_cpu_conv2d_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy, const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom g);
int sd_cpu_conv2d_dw(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b, sd_conv2d_geom g);
int sd_cpu_conv2d_dw_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy, const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom g);
int sd_cpu_group_norm(sd_ctx *ctx, sd_tensor *y, sd_tensor *mean, sd_tensor *rstd, const sd_tensor *x, const sd_tensor *gamma, const sd_tensor *beta, int groups, float eps, sd_act act);
int sd_cpu_group_norm_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dgamma, sd_tensor *dbeta, const sd_tensor *dy, const sd_tensor *x, const sd_tensor *mean, const sd_tensor *rstd, const sd_tensor *gamma, const sd_tensor *beta, int groups, sd_act act);
int sd_cpu_layer_norm(sd_ctx *ctx, sd_tensor *y, sd_tensor *mean, sd_tensor *rstd, const sd_tensor *x, const sd_tensor *gamma, const sd_tensor *beta, float eps);
int sd_cpu_layer_norm_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dgamma, sd_tensor *dbeta, const sd_tensor *dy, const sd_tensor *x, const sd_tensor *mean, const sd_tensor *rstd, const sd_tensor *gamma);
int sd_cpu_act(sd_ctx *ctx, sd_act act, sd_tensor *y, const sd_tensor *x);
int sd_cpu_act_bwd(sd_ctx *ctx, sd_act act, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x);
int sd_cpu_geglu(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x);
int sd_cpu_geglu_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x);
int sd_cpu_rope(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *table);
int sd_cpu_rope_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *table);
int sd_cpu_softmax(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x);
int sd_cpu_softmax_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *y);
int sd_cpu_l2_normalize(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, float eps);
int sd_cpu_l2_normalize_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x, float eps);
/* to_win: x → win (partition), else win → x (merge); acc: += instead of = */
int sd_cpu_window(sd_ctx *ctx, sd_tensor *win, sd_tensor *x, int ws, int shift, int to_win, int acc);
int sd_cpu_attention(sd_ctx *ctx, sd_tensor *o, sd_tensor *lse, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v, sd_attn_args a);
int sd_cpu_attention_bwd(sd_ctx *ctx, sd_tensor *dq, sd_tensor *dk, sd_tensor *dv, const sd_tensor *dout, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v, const sd_tensor *o, const sd_tensor *lse, sd_attn_args a);
int sd_cpu_upsample_nearest(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x);
int sd_cpu_upsample_nearest_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy);
int sd_cpu_concat(sd_ctx *ctx, sd_tensor *y, const sd_tensor *const *xs, int n, int axis);
int sd_cpu_concat_bwd(sd_ctx *ctx, sd_tensor *const *dxs, int n, const sd_tensor *dy, int axis);
int sd_cpu_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *table, const sd_tensor *ids);
int sd_cpu_embedding_bwd(sd_ctx *ctx, sd_tensor *dtable, const sd_tensor *dy, const sd_tensor *ids);
int sd_cpu_timestep_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *t, int flip_sin_to_cos, float freq_shift, float max_period);
int sd_cpu_loss(sd_ctx *ctx, sd_tensor *loss, sd_tensor *per_sample, const sd_tensor *pred, const sd_tensor *target, const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind);
int sd_cpu_loss_bwd(sd_ctx *ctx, sd_tensor *dpred, const sd_tensor *pred, const sd_tensor *target, const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind, float dloss);
int sd_cpu_adamw(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *m, sd_tensor *v, const sd_adamw_scalars *s, sd_dtype half);
int sd_cpu_lion(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *m, const sd_lion_scalars *s);
int sd_cpu_sgd(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *buf, const sd_sgd_scalars *s);
int sd_cpu_adafactor_sq(sd_ctx *ctx, const sd_tensor *g, sd_tensor *row, sd_tensor *col, sd_tensor *rmean, sd_tensor *v, sd_tensor *u, const sd_adafactor_scalars *s);
int sd_cpu_adafactor_apply(sd_ctx *ctx, sd_tensor *p, const sd_tensor *u, sd_tensor *m, const sd_adafactor_scalars *s);
int sd_cpu_bnb2_step(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, const sd_bnb_state_ptrs *st, const sd_bnb2_scalars *s, const sd_bnb_qmaps *q);
int sd_cpu_bnb1_step(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, const sd_bnb_state_ptrs *st, const sd_bnb1_scalars *s, const sd_bnb_qmaps *q);
int sd_cpu_sumsq(sd_ctx *ctx, const sd_tensor *x, double *out);
int sd_cpu_scale_round(sd_ctx *ctx, sd_tensor *x, float s, sd_dtype round, int *nonfinite);

/* CUDA backend (lib/tensor/cuda/ops_*.cu, built with CUDA=1): the same signatures. Work is queued on
 * the device stream and the functions return once it is queued (launch errors are reported;
 * execution errors by the next synchronising call). Scratch comes from ctx->scratch (device arena). */
#ifdef __cplusplus
extern "C" {
#endif
int sd_cuda_fill(sd_ctx *ctx, sd_tensor *y, float value);
int sd_cuda_convert(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x);
int sd_cuda_permute(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const int *perm);
int sd_cuda_permute_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const int *perm);
int sd_cuda_add(sd_ctx *ctx, sd_tensor *y, const sd_tensor *a, const sd_tensor *b);
int sd_cuda_mul(sd_ctx *ctx, sd_tensor *y, const sd_tensor *a, const sd_tensor *b);
int sd_cuda_mul_bwd(sd_ctx *ctx, sd_tensor *da, sd_tensor *db, const sd_tensor *dy, const sd_tensor *a, const sd_tensor *b);
int sd_cuda_axpby(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x, float beta);
int sd_cuda_sum_to(sd_ctx *ctx, sd_tensor *y, float alpha, const sd_tensor *x);
int sd_cuda_linear(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b);
int sd_cuda_linear_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy, const sd_tensor *x, const sd_tensor *w);
int sd_cuda_matmul(sd_ctx *ctx, sd_tensor *c, const sd_tensor *a, int trans_a, const sd_tensor *b, int trans_b, float alpha, float beta);
int sd_cuda_conv2d(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b, sd_conv2d_geom g);
int sd_cuda_conv2d_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy, const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom g);
int sd_cuda_conv2d_dw(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b, sd_conv2d_geom g);
int sd_cuda_conv2d_dw_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dw, sd_tensor *db, const sd_tensor *dy, const sd_tensor *x, const sd_tensor *w, sd_conv2d_geom g);
int sd_cuda_group_norm(sd_ctx *ctx, sd_tensor *y, sd_tensor *mean, sd_tensor *rstd, const sd_tensor *x, const sd_tensor *gamma, const sd_tensor *beta, int groups, float eps, sd_act act);
int sd_cuda_group_norm_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dgamma, sd_tensor *dbeta, const sd_tensor *dy, const sd_tensor *x, const sd_tensor *mean, const sd_tensor *rstd, const sd_tensor *gamma, const sd_tensor *beta, int groups, sd_act act);
int sd_cuda_layer_norm(sd_ctx *ctx, sd_tensor *y, sd_tensor *mean, sd_tensor *rstd, const sd_tensor *x, const sd_tensor *gamma, const sd_tensor *beta, float eps);
int sd_cuda_layer_norm_bwd(sd_ctx *ctx, sd_tensor *dx, sd_tensor *dgamma, sd_tensor *dbeta, const sd_tensor *dy, const sd_tensor *x, const sd_tensor *mean, const sd_tensor *rstd, const sd_tensor *gamma);
int sd_cuda_act(sd_ctx *ctx, sd_act act, sd_tensor *y, const sd_tensor *x);
int sd_cuda_act_bwd(sd_ctx *ctx, sd_act act, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x);
int sd_cuda_geglu(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x);
int sd_cuda_geglu_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x);
int sd_cuda_rope(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, const sd_tensor *table);
int sd_cuda_rope_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *table);
int sd_cuda_softmax(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x);
int sd_cuda_softmax_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *y);
int sd_cuda_l2_normalize(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x, float eps);
int sd_cuda_l2_normalize_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy, const sd_tensor *x, float eps);
/* to_win: x → win (partition), else win → x (merge); acc: += instead of = */
int sd_cuda_window(sd_ctx *ctx, sd_tensor *win, sd_tensor *x, int ws, int shift, int to_win, int acc);
int sd_cuda_attention(sd_ctx *ctx, sd_tensor *o, sd_tensor *lse, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v, sd_attn_args a);
int sd_cuda_attention_bwd(sd_ctx *ctx, sd_tensor *dq, sd_tensor *dk, sd_tensor *dv, const sd_tensor *dout, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v, const sd_tensor *o, const sd_tensor *lse, sd_attn_args a);
int sd_cuda_upsample_nearest(sd_ctx *ctx, sd_tensor *y, const sd_tensor *x);
int sd_cuda_upsample_nearest_bwd(sd_ctx *ctx, sd_tensor *dx, const sd_tensor *dy);
int sd_cuda_concat(sd_ctx *ctx, sd_tensor *y, const sd_tensor *const *xs, int n, int axis);
int sd_cuda_concat_bwd(sd_ctx *ctx, sd_tensor *const *dxs, int n, const sd_tensor *dy, int axis);
int sd_cuda_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *table, const sd_tensor *ids);
int sd_cuda_embedding_bwd(sd_ctx *ctx, sd_tensor *dtable, const sd_tensor *dy, const sd_tensor *ids);
int sd_cuda_timestep_embedding(sd_ctx *ctx, sd_tensor *y, const sd_tensor *t, int flip_sin_to_cos, float freq_shift, float max_period);
int sd_cuda_loss(sd_ctx *ctx, sd_tensor *loss, sd_tensor *per_sample, const sd_tensor *pred, const sd_tensor *target, const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind);
int sd_cuda_loss_bwd(sd_ctx *ctx, sd_tensor *dpred, const sd_tensor *pred, const sd_tensor *target, const sd_tensor *weight, const sd_tensor *c, sd_loss_kind kind, float dloss);
int sd_cuda_adamw(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *m, sd_tensor *v, const sd_adamw_scalars *s, sd_dtype half);
int sd_cuda_lion(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *m, const sd_lion_scalars *s);
int sd_cuda_sgd(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, sd_tensor *buf, const sd_sgd_scalars *s);
int sd_cuda_adafactor_sq(sd_ctx *ctx, const sd_tensor *g, sd_tensor *row, sd_tensor *col, sd_tensor *rmean, sd_tensor *v, sd_tensor *u, const sd_adafactor_scalars *s);
int sd_cuda_adafactor_apply(sd_ctx *ctx, sd_tensor *p, const sd_tensor *u, sd_tensor *m, const sd_adafactor_scalars *s);
int sd_cuda_bnb2_step(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, const sd_bnb_state_ptrs *st, const sd_bnb2_scalars *s, const sd_bnb_qmaps *q);
int sd_cuda_bnb1_step(sd_ctx *ctx, sd_tensor *p, const sd_tensor *g, const sd_bnb_state_ptrs *st, const sd_bnb1_scalars *s, const sd_bnb_qmaps *q);
int sd_cuda_sumsq(sd_ctx *ctx, const sd_tensor *x, double *out);
int sd_cuda_scale_round(sd_ctx *ctx, sd_tensor *x, float s, sd_dtype round, int *nonfinite);
#ifdef __cplusplus
}
#endif

#endif
