/* Sample images during training (reference-behaviour.md §6.13) for the training loop: the
 * options --sample_prompts, --sample_every_n_steps, --sample_every_n_epochs, --sample_at_first and
 * --sample_sampler, the prompt file loaded and checked before training starts, and the
 * reference's three call sites (train_network.py): before the first step, after every optimizer
 * step and at every epoch end, each deciding with diffusion/sample_images.h's sd_sample_due().
 * Images go to <output_dir>/sample/ under the reference's names (with the A1111 "parameters"
 * text) and, when a TensorBoard log is open, to it as image summaries tagged "sample_<prompt
 * index>" at the global step (the key the reference logs them under with wandb).
 *
 * Sampling does not change training: the LoRA network runs with rt.training = 0 (no dropout,
 * nothing saved for a backward), the noise comes from the per-image seed streams (purpose
 * SD_RNG_SAMPLER; prompts without --d get a seed keyed by (run seed, global step, prompt index)),
 * no training stream is touched, and the round runs between optimizer steps (gradients were used
 * and are zeroed by the next step). A stop signal during a round ends it early (SD_EINTR); the
 * loop then stops at the step boundary as usual. */
#ifndef SD_TRAIN_LOOP_SAMPLE_H
#define SD_TRAIN_LOOP_SAMPLE_H

#include <signal.h>
#include <stdint.h>

#include "diffusion/sample_images.h"
#include "nn/lora_hook.h"
#include "train/loop.h"
#include "train/tboard.h"

typedef struct sd_train_sampling {
    int on;                          /* a prompt file and at least one trigger */
    sd_prompt_list prompts;
    sd_sample_triggers trig;
    sd_sampler_kind sampler;
    sd_gen_models gm;
    sd_sample_run_opts so;
    char *model_name;                /* the checkpoint's file stem (infotext "Model:") */
    sd_tb_writer *tb;                /* NULL: no TensorBoard log */
    int64_t tb_step;
    int tb_warned;
    sd_lora_rt *rt;
    volatile sig_atomic_t *stop;
    int64_t images;                  /* written so far */
} sd_train_sampling;

/* Check the options and load the prompt file (before the models are loaded, so a bad file stops
 * the run at once). SD_EUSAGE for option errors (a trigger without --sample_prompts, an unknown
 * --sample_sampler); prompt-file errors as diffusion/prompt_file.h returns them ("FILE:LINE:
 * problem"). Without any trigger the file is still checked, a warning says that no samples will
 * be made, and s->on stays 0. */
int sd_train_sampling_init(sd_train_sampling *s, const sd_train_config *c);

/* After the models and the LoRA network exist: check every prompt against the model (size a
 * multiple of its total downsampling, sampler/steps combinations), and wire the models. `tb` may
 * be NULL. clip2: SDXL's second text encoder (NULL for SD1/SD2). The pointers are borrowed for the
 * life of s. */
int sd_train_sampling_attach(sd_train_sampling *s, const sd_train_config *c, sd_unet *unet, sd_clip *clip,
                             sd_clip *clip2, sd_vae *vae, sd_family family, sd_clip_tokenizer *tok, int v_prediction,
                             sd_lora_rt *rt, uint64_t seed, const char *output_dir, sd_tb_writer *tb);

/* One of the reference's calls: (0, global_step) before training, (SD_SAMPLE_NO_EPOCH,
 * global_step) after an optimizer step, (epoch + 1, global_step) at the end of epoch `epoch`.
 * Samples when sd_sample_due() says so; SD_OK otherwise. SD_EINTR when *stop was set during the
 * round (the images written until then stay). */
int sd_train_sampling_maybe(sd_train_sampling *s, sd_ctx *ctx, int epoch, int64_t global_step);

void sd_train_sampling_free(sd_train_sampling *s);

#endif
