/* The steps of the optimizers other than AdamW (internal to lib/train/optim*.c; the formulas and
 * the reference versions are in optim.h). Each takes the group LRs (NULL = the initial ones) and
 * the skip flags of sd_optim_step. */
#ifndef SD_TRAIN_OPTIM_KINDS_H
#define SD_TRAIN_OPTIM_KINDS_H

#include <stdint.h>

#include "train/optim.h"

static inline double sd_optim_glr(const sd_optim *o, const double *lr, int g)
{
    return lr ? lr[g] : o->groups[g].lr;
}

/* State (or scratch) `data` as an f32 tensor of parameter p's shape on the optimizer's device (optim.c). */
sd_tensor sd_optim_state_view(const sd_optim *o, const sd_param *p, float *data);

int sd_optim_step_lion(sd_optim *o, const double *lr, const uint8_t *skip);
int sd_optim_step_sgd(sd_optim *o, const double *lr, const uint8_t *skip);
int sd_optim_step_adafactor(sd_optim *o, const double *lr, const uint8_t *skip);
int sd_optim_step_prodigy(sd_optim *o, const double *lr, const uint8_t *skip);
int sd_optim_step_dadapt_adam(sd_optim *o, const double *lr, const uint8_t *skip);
int sd_optim_step_dadapt_sgd(sd_optim *o, const double *lr, const uint8_t *skip);
int sd_optim_step_dadapt_adagrad(sd_optim *o, const double *lr, const uint8_t *skip);
int sd_optim_step_dadapt_adan(sd_optim *o, const double *lr, const uint8_t *skip);
int sd_optim_step_dadapt_lion(sd_optim *o, const double *lr, const uint8_t *skip);
int sd_optim_step_schedulefree(sd_optim *o, const double *lr, const uint8_t *skip);
int sd_optim_step_dadapt_preprint(sd_optim *o, const double *lr, const uint8_t *skip);

#endif
