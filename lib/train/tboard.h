/* Training logs: TensorBoard event files (what torch.utils.tensorboard.SummaryWriter writes for
 * add_scalar, which the reference's accelerate tracker uses) and a JSON-lines step log.
 *
 * Event file format (TFRecord of serialized tensorflow.Event protos):
 *   record = u64le length | u32le masked_crc32c(length bytes) | data | u32le masked_crc32c(data)
 *   masked_crc(x) = ((c >> 15) | (c << 17)) + 0xa282ead8 with c = CRC-32C (Castagnoli) of x
 *   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
 *   Summary { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
 * The first record is Event{wall_time, file_version: "brain.Event:2"}; then one Event per scalar
 * {wall_time, step, summary{value{tag, simple_value}}} (proto3: step 0 is omitted, like the
 * reference's writer). Every write is flushed, so `tensorboard --logdir` sees it at once.
 * Images (SummaryWriter.add_image; sd-train's sample images): Value { tag = 1; Image image = 4 }
 * with Image { int32 height = 1; int32 width = 2; int32 colorspace = 3 (1 grey, 2 grey+alpha,
 * 3 RGB, 4 RGBA: the channel count); bytes encoded_image_string = 4 (PNG) }.
 *
 * Where (spec §6.15): the reference logs to logging_dir/<log_prefix><YYYYmmddHHMMSS> (local time)
 * and accelerate's tracker adds the run name ("network_train" or --log_tracker_name) below it;
 * the file is named "events.out.tfevents.<unix time %010d>.<hostname>.<pid>.<n>" as the
 * tensorboard package names it (readers only look for "tfevents" in the name). The reference's
 * hparams summary of the options (accelerate's store_init_configuration) is not written.
 *
 * Tags the reference logs: loss/current, loss/average, loss/epoch_average (step = epoch), lr/<desc>
 * per group (lr/unet, lr/textencoder, lr/unet plus, lr/unet_block3 …), max_norm/keys_scaled,
 * max_norm/max_key_norm, norm/avg_key_norm; loss/validation/step_average and step_divergence (at
 * the global step), loss/validation/epoch_average and epoch_divergence (at the epoch; see
 * train/validation.h); sample images as "sample_<prompt index>" at the global step (the key the
 * reference logs them under with wandb; §6.13). */
#ifndef SD_TRAIN_TBOARD_H
#define SD_TRAIN_TBOARD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78); chain with crc = sd_crc32c(crc, ...)
 * starting from 0. crc32c("123456789") = 0xE3069283. */
uint32_t sd_crc32c(uint32_t crc, const void *data, size_t n);
/* TensorFlow's masked CRC of a buffer. */
uint32_t sd_tb_masked_crc(const void *data, size_t n);

/* Serialized Event protos (the data of one record). Return the byte count, or 0 if `cap` is too
 * small. A tag longer than 4096 bytes is refused (0). */
size_t sd_tb_encode_version_event(uint8_t *buf, size_t cap, double wall_time);
size_t sd_tb_encode_scalar_event(uint8_t *buf, size_t cap, double wall_time, int64_t step,
                                 const char *tag, float value);
/* Image event {wall_time, step, summary{value{tag, image{height, width, colorspace, png}}}}.
 * Returns the byte count, or 0 when cap is too small (sd_tb_image_event_size bytes are enough),
 * the tag is longer than 4096 bytes, or a dimension/colorspace is not positive. */
size_t sd_tb_encode_image_event(uint8_t *buf, size_t cap, double wall_time, int64_t step, const char *tag,
                                int height, int width, int colorspace, const uint8_t *png, size_t n);
size_t sd_tb_image_event_size(const char *tag, size_t n);
/* One framed record (12 + n + 4 bytes) into out (cap ≥ n + 16). Returns the record size. */
size_t sd_tb_frame(uint8_t *out, size_t cap, const uint8_t *data, size_t n);

/* "<logging_dir>/<log_prefix><YYYYmmddHHMMSS>" for local time t (prefix may be NULL). */
int sd_tb_run_dir(char *out, size_t n, const char *logging_dir, const char *log_prefix, time_t t);

typedef struct sd_tb_writer {
    FILE *fp;
    char *path;
} sd_tb_writer;

/* Create `dir` (mkdir -p) and the event file in it, and write the version record. */
int sd_tb_open(sd_tb_writer *w, const char *dir, double wall_time);
/* One scalar event (flushed). */
int sd_tb_scalar(sd_tb_writer *w, const char *tag, float value, int64_t step, double wall_time);
/* One image event (encoded image bytes, e.g. PNG; colorspace = channel count 1..4), flushed. */
int sd_tb_image(sd_tb_writer *w, const char *tag, int64_t step, double wall_time, int height, int width,
                int colorspace, const uint8_t *png, size_t n);
/* Close (flushes); safe on a zeroed or already closed writer. */
int sd_tb_close(sd_tb_writer *w);

/* Current time as Python's time.time(). */
double sd_wall_time(void);

/* ---- the reference's LossRecorder (progress-bar avr_loss, loss/average, loss/epoch_average) ---
 * add(epoch, step, loss) per micro batch, step = its index in the epoch: during epoch 0 the value
 * is appended; later it replaces the value at the same index (the list grows with zeros if the
 * epoch is longer), keeping a running double total; the average is total / count (0 when empty).
 * The list and the total are saved in resumable states so a resumed run logs the same numbers. */
typedef struct sd_loss_recorder {
    double *list;
    size_t n, cap;
    double total;
} sd_loss_recorder;

void sd_loss_recorder_init(sd_loss_recorder *r);
void sd_loss_recorder_free(sd_loss_recorder *r);
int sd_loss_recorder_add(sd_loss_recorder *r, int64_t epoch, int64_t step, double loss);
double sd_loss_recorder_average(const sd_loss_recorder *r);
/* Replace the contents (e.g. from a state). */
int sd_loss_recorder_set(sd_loss_recorder *r, const double *list, size_t n, double total);

/* ---- JSON-lines step log ------------------------------------------------------------------ */

typedef struct sd_trainlog_rec {
    int64_t step;            /* global step (optimizer steps done) */
    int64_t epoch;           /* 1-based epoch */
    double loss;             /* loss of this step (mean over its micro batches) */
    double avr_loss;         /* the progress bar's moving average */
    int ngroups;
    const char *const *lr_names;   /* "unet", "textencoder", ... */
    const double *lrs;
    double grad_norm;        /* NAN: not measured (omitted) */
    double sec_per_step;
    double wall_time;
    double loss_scale;       /* 0: no loss scaler (omitted); else the scale the step used */
    int skipped;             /* the loss scaler skipped the optimizer step (with loss_scale only) */
} sd_trainlog_rec;

/* One line: {"step":12,"epoch":1,"loss":0.1,"avr_loss":0.12,"lr":{"unet":0.0001},
 * "grad_norm":0.5,"sec_per_step":0.25,"time":1700000000.5}; with a loss scaler also
 * "loss_scale":65536.0,"skipped":false after "grad_norm"; numbers as Python's repr (shortest
 * round trip), non-finite numbers as null. Flushed. */
int sd_trainlog_write(FILE *fp, const sd_trainlog_rec *r);

#endif
