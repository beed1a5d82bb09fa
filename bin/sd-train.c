/* sd-train: training on SD1.x / SD2.x: LoRA (kohya-ss/sd-scripts train_network.py with
 * networks.lora), DreamBooth (train_db.py) and fine-tuning (fine_tune.py) of the whole model.
 * Options as the reference names them; the work is lib/train/loop.c and lib/train/full.c. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/log.h"
#include "base/opts.h"
#include "base/threads.h"
#include "tensor/device.h"
#include "io/cmdline.h"
#include "data/dataset_config.h"
#include "data/dataset_records.h"
#include "io/jsonl.h"
#include "train/full.h"
#include "train/loop.h"

static sd_train_config c;
static struct {
    const char *data, *method, *network_alpha, *log_with, *caption_separator, *keep_tokens_separator;
    const char *device;
    const char *dataset_config, *train_data_dir, *reg_data_dir, *in_json, *caption_extension;
    const char *conditioning_data_dir;
    int dataset_repeats;
    int no_token_padding;
    sd_opt_list network_args, optimizer_args, resolution, lr_scheduler_args;
    sd_opt_list base_weights, base_weights_multiplier;
    sd_opt_list text_encoder_lr;
    int threads;
    int64_t max_train_steps;
    double token_warmup_step;
    int console_log_level;
    const char *console_log_file;
    /* kohya options without effect here, or refused (kohya[] below): their values are consumed here */
    int xformers, sdpa, mem_eff_attn, diffusers_xformers, torch_compile, persistent_data_loader_workers, lowram,
        highvram, skip_cache_check, console_log_simple, cpu_offload_checkpointing, disable_mmap_load_safetensors;
    int max_data_loader_n_workers, vae_batch_size;
    const char *dynamo_backend;
    int debug_dataset, skip_until_initial_step, initial_epoch;
    int64_t initial_step;
    const char *lr_scheduler_type, *face_crop_aug_range, *dataset_class;   /* face_crop_aug_range: "low,high" */
} a;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    if (g_stop) _exit(128 + sig);   /* a second signal: stop now */
    g_stop = sig;
}

#define G_MODEL "Model"
#define G_NET "Network"
#define G_TI "Textual inversion (--method ti)"
#define G_OPT "Optimizer and schedule"
#define G_DATA "Data and captions"
#define G_OBJ "Objective"
#define G_OUT "Output"
#define G_SAMPLE "Sample images during training"
#define G_VAL "Validation"
#define G_LOG "Logging"
#define G_KOHYA "kohya options accepted without effect here (each prints why; sd-train(1))"
#define KOHYA_NOOP(n, t, d, h) { .name = n, .type = t, .dest = d, .group = G_KOHYA, .help = h }
#define KOHYA_REFUSED(n, t, d) { .name = n, .type = t, .dest = d, .flags = SD_OPTF_HIDDEN, .help = "refused" }

static const sd_opt table[] = {
    /* model */
    {.name = "pretrained_model_name_or_path", .alias = "model", .type = SD_OPT_STRING, .dest = &c.model,
     .metavar = "FILE", .group = G_MODEL, .help = "the base model: an SD1.x/SD2.x/SDXL checkpoint"},
    {.name = "model_config", .type = SD_OPT_STRING, .dest = &c.model_config, .metavar = "FILE", .group = G_MODEL,
     .help = "model hyper-parameters (JSON/TOML) for models that are not a standard SD1/SD2 shape"},
    {.name = "v2", .type = SD_OPT_FLAG, .dest = &c.v2, .group = G_MODEL,
     .help = "SD 2.x model (detected from the weights; accepted for compatibility)"},
    {.name = "v_parameterization", .type = SD_OPT_FLAG, .dest = &c.v_parameterization, .group = G_MODEL,
     .help = "v-prediction target"},
    {.name = "clip_skip", .type = SD_OPT_INT, .dest = &c.clip_skip, SD_OPT_RANGE(0, 24), .group = G_MODEL,
     .help = "use the output of the k-th last text-encoder layer (1 = last)"},
    {.name = "max_token_length", .type = SD_OPT_INT, .dest = &c.max_token_length, SD_OPT_RANGE(0, 225),
     .group = G_MODEL, .help = "75 (default), 150 or 225 tokens per caption"},
    {.name = "mixed_precision", .type = SD_OPT_STRING, .dest = &c.mixed_precision, .def = "no", .group = G_MODEL,
     .help = "no, fp16 or bf16: storage of the frozen weights (the arithmetic stays float32 on the CPU)"},
    {.name = "full_fp16", .type = SD_OPT_FLAG, .dest = &c.full_fp16, .group = G_MODEL,
     .help = "the trained weights, their gradients and AdamW's moments in float16 too (needs --mixed_precision "
             "fp16)"},
    {.name = "full_bf16", .type = SD_OPT_FLAG, .dest = &c.full_bf16, .group = G_MODEL,
     .help = "the trained weights, their gradients and AdamW's moments in bfloat16 (needs --mixed_precision bf16)"},
    {.name = "fp8_base", .type = SD_OPT_FLAG, .dest = &c.fp8_base, .group = G_MODEL,
     .help = "store the frozen UNet and text-encoder linear/conv weights as float8_e4m3fn, upcast per product "
             "(--method lora; needs --mixed_precision fp16 or bf16)"},
    {.name = "fp8_base_unet", .type = SD_OPT_FLAG, .dest = &c.fp8_base_unet, .group = G_MODEL,
     .help = "float8_e4m3fn for the UNet only; the text encoders stay in the --mixed_precision dtype"},
    /* network */
    {.name = "method", .type = SD_OPT_STRING, .dest = &a.method, .def = "lora", .group = G_NET,
     .help = "lora (train_network.py), db or dreambooth (train_db.py: UNet + text encoder), ft or finetune "
             "(fine_tune.py: UNet, + text encoder with --train_text_encoder), ti or textual_inversion "
             "(train_textual_inversion.py); on SDXL db and ft are sdxl_train.py (UNet, + both text encoders with "
             "--train_text_encoder); controlnet or control_net (train_control_net.py, SD1.x/SD2.x: a ControlNet of "
             "the frozen UNet on image/conditioning-image pairs)"},
    {.name = "controlnet_model_name_or_path", .type = SD_OPT_STRING, .dest = &c.controlnet_model, .metavar = "FILE",
     .group = G_NET, .help = "--method controlnet: start from this ControlNet (safetensors, ldm names as saved here "
                             "or Diffusers names) instead of a copy of the UNet's encoder"},
    {.name = "token_string", .type = SD_OPT_STRING, .dest = &c.ti.token_string, .group = G_TI,
     .help = "the new word (must not be in the vocabulary; default output name)"},
    {.name = "num_vectors_per_token", .type = SD_OPT_INT, .dest = &c.ti.num_vectors_per_token, .def = "1",
     SD_OPT_RANGE(1, 75), .group = G_TI, .help = "vectors of the new word (T, T1, ... T(N-1))"},
    {.name = "init_word", .type = SD_OPT_STRING, .dest = &c.ti.init_word, .group = G_TI,
     .help = "initialise the vectors from this word's token embeddings"},
    {.name = "weights", .type = SD_OPT_STRING, .dest = &c.ti.weights, .metavar = "FILE", .group = G_TI,
     .help = "start from this embedding (.safetensors emb_params, or an A1111/kohya .pt; SDXL: clip_l/clip_g)"},
    {.name = "use_object_template", .type = SD_OPT_FLAG, .dest = &c.ti.use_object_template, .group = G_TI,
     .help = "ignore captions: \"a photo of a {}\" ... (27 templates)"},
    {.name = "use_style_template", .type = SD_OPT_FLAG, .dest = &c.ti.use_style_template, .group = G_TI,
     .help = "ignore captions: \"a painting in the style of {}\" ... (19 templates)"},
    {.name = "network_module", .type = SD_OPT_STRING, .dest = &c.network_module, .group = G_NET,
     .help = "networks.lora (default), networks.lora_fa (LoRA-FA: lora_down frozen, only lora_up trains), "
             "networks.dylora (DyLoRA: --network_args unit=N) or networks.oft (Orthogonal Finetuning: UNet only; "
             "network_dim = number of blocks, network_alpha = constraint; --network_args enable_all_linear=1, "
             "enable_conv=1) or lycoris.kohya (LyCORIS, --network_args algo=lora|locon|loha|lokr, preset=full|full-lin|"
             "attn-mlp|attn-only|unet-only|unet-transformer-only|unet-convblock-only, conv_dim=, "
             "conv_alpha= (default network_dim/alpha), module_dropout=, rank_dropout=, dropout= (bypass_mode, lora/locon), "
             "rs_lora=, bypass_mode=, loraplus_*; lokr: "
             "factor=, decompose_both=, full_matrix=, unbalanced_factorization=; use_tucker= with lora/locon/loha; DoRA refused)"},
    {.name = "network_dim", .type = SD_OPT_INT, .dest = &c.network_dim, SD_OPT_RANGE(0, 4096), .group = G_NET,
     .help = "LoRA rank (default 4)"},
    {.name = "network_alpha", .type = SD_OPT_STRING, .dest = &a.network_alpha, .def = "1", .group = G_NET,
     .help = "LoRA alpha; scale = alpha / rank"},
    {.name = "network_dropout", .type = SD_OPT_DOUBLE, .dest = &c.network_dropout, SD_OPT_RANGE(0, 1),
     .group = G_NET, .help = "neuron dropout on the LoRA down projection (lycoris.kohya: LyCORIS's dropout, bypass_mode only)"},
    {.name = "network_args", .type = SD_OPT_STRINGS, .dest = &a.network_args, .flags = SD_OPTF_NARGS,
     .metavar = "K=V", .group = G_NET,
     .help = "conv_dim, conv_alpha, block_dims, block_alphas, conv_block_dims, conv_block_alphas, down/mid/up_lr_weight, "
             "block_lr_zero_threshold, rank_dropout, module_dropout, loraplus_*lr_ratio"},
    {.name = "network_weights", .type = SD_OPT_STRING, .dest = &c.network_weights, .metavar = "FILE", .group = G_NET,
     .help = "start from these LoRA weights"},
    {.name = "dim_from_weights", .type = SD_OPT_FLAG, .dest = &c.dim_from_weights, .group = G_NET,
     .help = "take the modules, ranks and alphas from --network_weights"},
    {.name = "base_weights", .type = SD_OPT_STRINGS, .dest = &a.base_weights, .flags = SD_OPTF_NARGS,
     .metavar = "FILE", .group = G_NET, .help = "LoRA files merged into the model before training"},
    {.name = "base_weights_multiplier", .type = SD_OPT_DOUBLES, .dest = &a.base_weights_multiplier,
     .flags = SD_OPTF_NARGS, .metavar = "M", .group = G_NET,
     .help = "the multiplier of each --base_weights file (default 1.0 each)"},
    {.name = "network_train_unet_only", .type = SD_OPT_FLAG, .dest = &c.train_unet_only, .group = G_NET,
     .help = "no text-encoder modules"},
    {.name = "network_train_text_encoder_only", .type = SD_OPT_FLAG, .dest = &c.train_text_encoder_only,
     .group = G_NET, .help = "no UNet modules"},
    {.name = "unet_lr", .type = SD_OPT_DOUBLE, .dest = &c.unet_lr, SD_OPT_ATLEAST(0), .group = G_NET,
     .help = "learning rate of the UNet modules (default --learning_rate)"},
    {.name = "text_encoder_lr", .type = SD_OPT_DOUBLES, .dest = &a.text_encoder_lr, SD_OPT_ATLEAST(0),
     .flags = SD_OPTF_NARGS, .metavar = "LR", .group = G_NET,
     .help = "learning rate of the text-encoder modules (default --learning_rate; 0 freezes them); a list as in "
             "the reference, of which LoRA uses the first value (SDXL: both text encoders)"},
    {.name = "scale_weight_norms", .type = SD_OPT_DOUBLE, .dest = &c.scale_weight_norms, SD_OPT_ATLEAST(0),
     .group = G_NET, .help = "max-norm regularisation: scale modules whose ‖ΔW‖ exceeds this after every step"},
    /* full-weight training (db / ft) */
    {.name = "learning_rate_te", .type = SD_OPT_DOUBLE, .dest = &c.learning_rate_te, SD_OPT_ATLEAST(0), .group = G_NET,
     .help = "db/ft: learning rate of the text encoder (default: --learning_rate, one optimizer group)"},
    {.name = "stop_text_encoder_training", .type = SD_OPT_INT64, .dest = &c.stop_text_encoder_training,
     SD_OPT_RANGE(-1, INT64_MAX / 2), .group = G_NET,
     .help = "db: stop training the text encoder at this step (-1: do not train it; default: never stop)"},
    {.name = "no_half_vae", .type = SD_OPT_FLAG, .dest = &c.no_half_vae, .group = G_NET,
     .help = "keep the VAE in float32 (it always computes in float32 here; db/ft then save it as float32)"},
    {.name = "train_text_encoder", .type = SD_OPT_FLAG, .dest = &c.train_text_encoder, .group = G_NET,
     .help = "ft (SDXL: db and ft): train the text encoder(s) too"},
    {.name = "learning_rate_te1", .type = SD_OPT_DOUBLE, .dest = &c.learning_rate_te1, SD_OPT_ATLEAST(0), .group = G_NET,
     .help = "SDXL db/ft: learning rate of text encoder 1 (default --learning_rate; 0: not trained)"},
    {.name = "learning_rate_te2", .type = SD_OPT_DOUBLE, .dest = &c.learning_rate_te2, SD_OPT_ATLEAST(0), .group = G_NET,
     .help = "SDXL db/ft: learning rate of text encoder 2 (default --learning_rate; 0: not trained)"},
    {.name = "block_lr", .type = SD_OPT_STRING, .dest = &c.block_lr, .metavar = "LR,...", .group = G_NET,
     .help = "SDXL db/ft: 23 UNet learning rates (time/label embedding, input_blocks 0-8, middle_block 0-2, "
             "output_blocks 0-8, out); 0 leaves a block unchanged"},
    {.name = "fused_optimizer_groups", .type = SD_OPT_INT, .dest = &c.fused_optimizer_groups, SD_OPT_RANGE(0, INT_MAX),
     .group = G_NET, .help = "SDXL db/ft: N optimizers over consecutive weights, each stepping inside the "
             "backward once its gradients are complete, which are then freed (less memory; 0: off)"},
    {.name = "fused_backward_pass", .type = SD_OPT_FLAG, .dest = &c.fused_backward_pass, .group = G_NET,
     .help = "SDXL db/ft, Adafactor: each weight steps inside the backward as soon as its gradient is "
             "complete, which is then freed (less memory; --max_grad_norm clips each tensor alone)"},
    {.name = "use_safetensors", .type = SD_OPT_FLAG, .dest = &c.use_safetensors, .group = G_NET,
     .help = "db/ft: save .safetensors where the format would be ckpt"},
    {.name = "no_token_padding", .type = SD_OPT_FLAG, .dest = &a.no_token_padding, .group = G_NET,
     .help = "db: accepted; no effect (as in the reference, whose switch is disconnected)"},
    /* optimizer */
    {.name = "optimizer_type", .type = SD_OPT_STRING, .dest = &c.optimizer_type, .def = "", .group = G_OPT,
     .help = "AdamW, AdamW8bit, Lion, SGDNesterov, Adafactor, Prodigy, DAdaptation (DAdaptAdamPreprint), DAdaptAdam"},
    {.name = "use_8bit_adam", .type = SD_OPT_FLAG, .dest = &c.use_8bit_adam, .group = G_OPT,
     .help = "AdamW8bit (bitsandbytes)"},
    {.name = "use_lion_optimizer", .type = SD_OPT_FLAG, .dest = &c.use_lion_optimizer, .group = G_OPT,
     .help = "Lion (lion-pytorch)"},
    {.name = "optimizer_args", .type = SD_OPT_STRINGS, .dest = &a.optimizer_args, .flags = SD_OPTF_NARGS,
     .metavar = "K=V", .group = G_OPT, .help = "the optimizer's keyword arguments: betas=0.9,0.999 weight_decay=0.01 ..."},
    {.name = "learning_rate", .type = SD_OPT_DOUBLE, .dest = &c.learning_rate, .def = "2e-6", SD_OPT_ATLEAST(0),
     .group = G_OPT, .help = "base learning rate (LoRA usually 1e-4)"},
    {.name = "max_grad_norm", .type = SD_OPT_DOUBLE, .dest = &c.max_grad_norm, .def = "1.0", SD_OPT_ATLEAST(0),
     .group = G_OPT, .help = "clip the global gradient norm; 0 = off"},
    {.name = "lr_scheduler", .type = SD_OPT_STRING, .dest = &c.lr_scheduler, .def = "constant", .group = G_OPT,
     .help = "constant, constant_with_warmup, linear, cosine, cosine_with_restarts, polynomial, inverse_sqrt, "
             "cosine_with_min_lr, warmup_stable_decay, piecewise_constant (adafactor: automatic)"},
    {.name = "lr_scheduler_args", .type = SD_OPT_STRINGS, .dest = &a.lr_scheduler_args, .flags = SD_OPTF_NARGS,
     .metavar = "K=V", .group = G_OPT,
     .help = "the schedule function's keyword arguments (Python literals): 'step_rules=\"1:10,0.1:20,0.01\"' "
             "(piecewise_constant), warmup_type=/decay_type='linear'|'cosine'|'1-sqrt' (warmup_stable_decay), "
             "min_lr=LR (cosine_with_min_lr), num_cycles=X (cosine), lr_end=LR (polynomial)"},
    {.name = "lr_warmup_steps", .type = SD_OPT_STRING, .dest = &c.lr_warmup_steps, .def = "0", .group = G_OPT,
     .help = "warm-up steps: N, a fraction < 1 or N%"},
    {.name = "lr_decay_steps", .type = SD_OPT_STRING, .dest = &c.lr_decay_steps, .metavar = "N", .group = G_OPT,
     .help = "warmup_stable_decay: decay steps: N, a fraction < 1 or N% (default 0)"},
    {.name = "lr_scheduler_num_cycles", .type = SD_OPT_INT, .dest = &c.lr_scheduler_num_cycles, .def = "1",
     SD_OPT_ATLEAST(1), .group = G_OPT,
     .help = "cosine_with_restarts cycles; cosine_with_min_lr / warmup_stable_decay: num_cycles / 2 waves"},
    {.name = "lr_scheduler_power", .type = SD_OPT_DOUBLE, .dest = &c.lr_scheduler_power, .def = "1",
     .group = G_OPT, .help = "polynomial power"},
    {.name = "lr_scheduler_timescale", .type = SD_OPT_INT64, .dest = &c.lr_scheduler_timescale, .group = G_OPT,
     .help = "inverse_sqrt timescale (default: the warm-up steps, or 10000 without a warm-up)"},
    {.name = "lr_scheduler_min_lr_ratio", .type = SD_OPT_DOUBLE, .dest = &c.lr_scheduler_min_lr_ratio,
     .metavar = "R", .group = G_OPT,
     .help = "cosine_with_min_lr (required, or min_lr= in --lr_scheduler_args) and warmup_stable_decay (default 0): "
             "the minimum LR as a ratio of the initial one"},
    {.name = "gradient_accumulation_steps", .type = SD_OPT_INT, .dest = &c.gradient_accumulation_steps, .def = "1",
     SD_OPT_RANGE(1, 65536), .group = G_OPT, .help = "micro batches per optimizer step"},
    {.name = "gradient_checkpointing", .type = SD_OPT_FLAG, .dest = &c.gradient_checkpointing, .group = G_OPT,
     .help = "recompute block activations in the backward (less memory, same gradients)"},
    {.name = "max_train_steps", .type = SD_OPT_INT64, .dest = &a.max_train_steps, .def = "1600", SD_OPT_ATLEAST(1),
     .group = G_OPT, .help = "optimizer steps"},
    {.name = "max_train_epochs", .type = SD_OPT_INT, .dest = &c.max_train_epochs, SD_OPT_ATLEAST(0), .group = G_OPT,
     .help = "epochs (overrides --max_train_steps)"},
    {.name = "seed", .type = SD_OPT_INT64, .dest = &c.seed, SD_OPT_RANGE(0, 4294967295.0), .group = G_OPT,
     .help = "random seed (default: random; a resumed run keeps its seed)"},
    /* data */
    {.name = "data", .type = SD_OPT_STRING, .dest = &a.data, .metavar = "FILE|-", .group = G_DATA,
     .help = "training records (JSON lines: 'latents' from sd-encode-latents, or 'image'; - = stdin)"},
    {.name = "dataset_config", .type = SD_OPT_STRING, .dest = &a.dataset_config, .metavar = "FILE", .group = G_DATA,
     .help = "kohya dataset config (TOML/JSON); images are encoded at every step, or once with --cache_latents"},
    {.name = "train_data_dir", .type = SD_OPT_STRING, .dest = &a.train_data_dir, .metavar = "DIR", .group = G_DATA,
     .help = "<repeats>_<class tokens> folders (with --in_json: the images of the metadata)"},
    {.name = "reg_data_dir", .type = SD_OPT_STRING, .dest = &a.reg_data_dir, .metavar = "DIR", .group = G_DATA,
     .help = "regularisation folders"},
    {.name = "in_json", .type = SD_OPT_STRING, .dest = &a.in_json, .metavar = "FILE", .group = G_DATA,
     .help = "fine-tuning metadata (JSON or JSONL)"},
    {.name = "conditioning_data_dir", .type = SD_OPT_STRING, .dest = &a.conditioning_data_dir, .metavar = "DIR",
     .group = G_DATA, .help = "--method controlnet with --train_data_dir: the conditioning images (same base names "
                              "as the training images)"},
    {.name = "caption_extension", .alias = "caption_extention", .type = SD_OPT_STRING, .dest = &a.caption_extension,
     .group = G_DATA, .help = "caption sidecar extension of the folder convention (default .caption)"},
    {.name = "dataset_repeats", .type = SD_OPT_INT, .dest = &a.dataset_repeats, SD_OPT_ATLEAST(1), .group = G_DATA,
     .help = "repeats of fine-tuning images"},
    {.name = "vae", .type = SD_OPT_STRING, .dest = &c.vae, .metavar = "FILE", .group = G_DATA,
     .help = "VAE for encoding images instead of the model's"},
    {.name = "enable_bucket", .type = SD_OPT_FLAG, .dest = &c.enable_bucket, .group = G_DATA,
     .help = "aspect-ratio buckets for images encoded here"},
    {.name = "min_bucket_reso", .type = SD_OPT_INT, .dest = &c.min_bucket_reso, .def = "256", SD_OPT_RANGE(0, 65536),
     .group = G_DATA, .help = "smallest bucket side"},
    {.name = "max_bucket_reso", .type = SD_OPT_INT, .dest = &c.max_bucket_reso, .def = "1024", SD_OPT_RANGE(1, 65536),
     .group = G_DATA, .help = "largest bucket side"},
    {.name = "bucket_reso_steps", .type = SD_OPT_INT, .dest = &c.bucket_reso_steps, .def = "64", SD_OPT_RANGE(1, 4096),
     .group = G_DATA, .help = "bucket side granularity"},
    {.name = "bucket_no_upscale", .type = SD_OPT_FLAG, .dest = &c.bucket_no_upscale, .group = G_DATA,
     .help = "never enlarge images"},
    {.name = "train_batch_size", .type = SD_OPT_INT, .dest = &c.train_batch_size, .def = "1", SD_OPT_RANGE(1, 4096),
     .group = G_DATA, .help = "images per micro batch (a record's batch_size wins)"},
    {.name = "resolution", .type = SD_OPT_INTS, .dest = &a.resolution, .nmin = 1, .nmax = 2, SD_OPT_RANGE(64, 65536),
     .group = G_DATA, .help = "W[,H]: recorded in the metadata (buckets come from the records)"},
    {.name = "cache_latents", .type = SD_OPT_FLAG, .dest = &c.cache_latents, .group = G_DATA,
     .help = "encode images without a latent file once, in memory (default: at every step)"},
    {.name = "cache_latents_to_disk", .type = SD_OPT_FLAG, .dest = &c.cache_latents_to_disk, .group = G_DATA,
     .help = "as --cache_latents, reusing/writing <image stem>_<W>x<H>_sd.npz beside each image"},
    {.name = "cache_text_encoder_outputs", .type = SD_OPT_FLAG, .dest = &c.cache_text_encoder_outputs, .group = G_DATA,
     .help = "SDXL: run the text encoders once per image, in memory (needs --network_train_unet_only)"},
    {.name = "cache_text_encoder_outputs_to_disk", .type = SD_OPT_FLAG, .dest = &c.cache_text_encoder_outputs_to_disk,
     .group = G_DATA, .help = "as --cache_text_encoder_outputs, reusing/writing <image stem>_te_outputs.npz"},
    {.name = "prior_loss_weight", .type = SD_OPT_DOUBLE, .dest = &c.prior_loss_weight, .def = "1.0",
     SD_OPT_ATLEAST(0), .group = G_DATA, .help = "loss weight of regularisation images"},
    {.name = "flip_aug", .type = SD_OPT_FLAG, .dest = &c.flip_aug, .group = G_DATA,
     .help = "use the flipped latents (or image) with probability 0.5"},
    {.name = "color_aug", .type = SD_OPT_FLAG, .dest = &c.color_aug, .group = G_DATA,
     .help = "images encoded at every step: random hue shift or gamma (p = 0.33)"},
    {.name = "random_crop", .type = SD_OPT_FLAG, .dest = &c.random_crop, .group = G_DATA,
     .help = "images encoded at every step: random trim offset into the bucket instead of the centre"},
    {.name = "face_crop_aug_range", .type = SD_OPT_STRING, .dest = &a.face_crop_aug_range, .metavar = "LOW,HIGH",
     .group = G_DATA, .help = "bucketing disabled, images named *_CX_CY_W_H: scale and crop around the face"},
    {.name = "masked_loss", .type = SD_OPT_FLAG, .dest = &c.masked_loss, .group = G_DATA,
     .help = "weight the loss by each sample's mask (alpha masks; conditioning images of ControlNet subsets; see sd-train(1))"},
    {.name = "alpha_mask", .type = SD_OPT_FLAG, .dest = &c.alpha_mask, .group = G_DATA,
     .help = "every record's alpha_mask default: the image's alpha/255 as loss mask"},
    {.name = "weighted_captions", .type = SD_OPT_FLAG, .dest = &c.weighted_captions, .group = G_DATA,
     .help = "(word:1.2) caption weights on the text-encoder output"},
    {.name = "shuffle_caption", .type = SD_OPT_FLAG, .dest = &c.caption.shuffle, .group = G_DATA,
     .help = "shuffle the tags after the kept ones"},
    {.name = "caption_separator", .type = SD_OPT_STRING, .dest = &a.caption_separator, .def = ",", .group = G_DATA,
     .help = "tag separator"},
    {.name = "keep_tokens", .type = SD_OPT_INT, .dest = &c.caption.keep_tokens, .def = "0", SD_OPT_ATLEAST(0),
     .group = G_DATA, .help = "leading tags kept in place"},
    {.name = "keep_tokens_separator", .type = SD_OPT_STRING, .dest = &a.keep_tokens_separator, .def = "",
     .group = G_DATA, .help = "text that ends the kept part"},
    {.name = "secondary_separator", .type = SD_OPT_STRING, .dest = &c.caption.secondary_separator, .group = G_DATA,
     .help = "a separator that stays together when shuffling, replaced by caption_separator"},
    {.name = "enable_wildcard", .type = SD_OPT_FLAG, .dest = &c.caption.enable_wildcard, .group = G_DATA,
     .help = "{a|b} choices and one random line of multi-line captions"},
    {.name = "caption_prefix", .type = SD_OPT_STRING, .dest = &c.caption.prefix, .group = G_DATA,
     .help = "text put before every caption"},
    {.name = "caption_suffix", .type = SD_OPT_STRING, .dest = &c.caption.suffix, .group = G_DATA,
     .help = "text put after every caption"},
    {.name = "caption_dropout_rate", .type = SD_OPT_DOUBLE, .dest = &c.caption.dropout_rate, .def = "0",
     SD_OPT_UNIT, .group = G_DATA, .help = "probability of an empty caption"},
    {.name = "caption_dropout_every_n_epochs", .type = SD_OPT_INT, .dest = &c.caption.dropout_every_n_epochs,
     .def = "0", SD_OPT_ATLEAST(0), .group = G_DATA, .help = "empty captions in every N-th epoch"},
    {.name = "caption_tag_dropout_rate", .type = SD_OPT_DOUBLE, .dest = &c.caption.tag_dropout_rate, .def = "0",
     SD_OPT_UNIT, .group = G_DATA, .help = "probability of dropping each shuffled tag"},
    {.name = "token_warmup_min", .type = SD_OPT_INT, .dest = &c.caption.token_warmup_min, .def = "1",
     SD_OPT_ATLEAST(0), .group = G_DATA, .help = "tags at the start of the token warm-up"},
    {.name = "token_warmup_step", .type = SD_OPT_DOUBLE, .dest = &a.token_warmup_step, .def = "0", SD_OPT_ATLEAST(0),
     .group = G_DATA, .help = "token warm-up length in steps (< 1: fraction of max_train_steps)"},
    /* objective */
    {.name = "noise_offset", .type = SD_OPT_DOUBLE, .dest = &c.noise_offset, .group = G_OBJ, .help = "noise offset"},
    {.name = "noise_offset_random_strength", .type = SD_OPT_FLAG, .dest = &c.noise_offset_random_strength,
     .group = G_OBJ, .help = "noise offset × U(0,1) per batch"},
    {.name = "adaptive_noise_scale", .type = SD_OPT_DOUBLE, .dest = &c.adaptive_noise_scale, .group = G_OBJ,
     .help = "noise offset + this × |mean of the latents|"},
    {.name = "multires_noise_iterations", .type = SD_OPT_INT, .dest = &c.multires_noise_iterations,
     SD_OPT_RANGE(0, 64), .group = G_OBJ, .help = "pyramid noise levels"},
    {.name = "multires_noise_discount", .type = SD_OPT_DOUBLE, .dest = &c.multires_noise_discount, .def = "0.3",
     .group = G_OBJ, .help = "pyramid noise discount"},
    {.name = "ip_noise_gamma", .type = SD_OPT_DOUBLE, .dest = &c.ip_noise_gamma, SD_OPT_ATLEAST(0), .group = G_OBJ,
     .help = "input perturbation noise"},
    {.name = "ip_noise_gamma_random_strength", .type = SD_OPT_FLAG, .dest = &c.ip_noise_gamma_random_strength,
     .group = G_OBJ, .help = "ip_noise_gamma × U(0,1) per batch"},
    {.name = "zero_terminal_snr", .type = SD_OPT_FLAG, .dest = &c.zero_terminal_snr, .group = G_OBJ,
     .help = "rescale the schedule to zero terminal SNR"},
    {.name = "min_timestep", .type = SD_OPT_INT, .dest = &c.min_timestep, .def = "-1", SD_OPT_RANGE(-1, 1000),
     .group = G_OBJ, .help = "lowest timestep (default 0)"},
    {.name = "max_timestep", .type = SD_OPT_INT, .dest = &c.max_timestep, .def = "-1", SD_OPT_RANGE(-1, 1000),
     .group = G_OBJ, .help = "timesteps below this (default 1000)"},
    {.name = "loss_type", .type = SD_OPT_STRING, .dest = &c.loss_type, .def = "l2", .group = G_OBJ,
     .help = "l2, l1, huber or smooth_l1"},
    {.name = "huber_schedule", .type = SD_OPT_STRING, .dest = &c.huber_schedule, .def = "snr", .group = G_OBJ,
     .help = "snr, exponential or constant"},
    {.name = "huber_c", .type = SD_OPT_DOUBLE, .dest = &c.huber_c, .def = "0.1", .group = G_OBJ, .help = "Huber c"},
    {.name = "huber_scale", .type = SD_OPT_DOUBLE, .dest = &c.huber_scale, .def = "1.0", .group = G_OBJ,
     .help = "Huber scale"},
    {.name = "min_snr_gamma", .type = SD_OPT_DOUBLE, .dest = &c.min_snr_gamma, SD_OPT_ATLEAST(0), .group = G_OBJ,
     .help = "min-SNR weighting gamma (5 is common)"},
    {.name = "scale_v_pred_loss_like_noise_pred", .type = SD_OPT_FLAG, .dest = &c.scale_v_pred_loss_like_noise_pred,
     .group = G_OBJ, .help = "v-pred loss scaled like ε-pred"},
    {.name = "v_pred_like_loss", .type = SD_OPT_DOUBLE, .dest = &c.v_pred_like_loss, SD_OPT_ATLEAST(0), .group = G_OBJ,
     .help = "add a v-pred-like loss"},
    {.name = "debiased_estimation_loss", .type = SD_OPT_FLAG, .dest = &c.debiased_estimation_loss, .group = G_OBJ,
     .help = "debiased estimation weighting"},
    /* output */
    {.name = "output_dir", .type = SD_OPT_STRING, .dest = &c.output_dir, .metavar = "DIR", .group = G_OUT,
     .help = "where the LoRA files and states go (default .)"},
    {.name = "output_name", .type = SD_OPT_STRING, .dest = &c.output_name, .group = G_OUT,
     .help = "base file name (default last / epoch / at)"},
    {.name = "save_precision", .type = SD_OPT_STRING, .dest = &c.save_precision, .metavar = "{float,fp16,bf16}",
     .group = G_OUT, .help = "dtype of the saved LoRA (default: as trained, float32)"},
    {.name = "save_model_as", .type = SD_OPT_STRING, .dest = &c.save_model_as, .def = "safetensors", .group = G_OUT,
     .help = "lora: safetensors; db/ft: ckpt, safetensors, diffusers or diffusers_safetensors (a Diffusers "
             "folder, .safetensors weights; default: the format of the model); ti: pt (default), ckpt or "
             "safetensors"},
    {.name = "save_every_n_epochs", .type = SD_OPT_INT, .dest = &c.save_every_n_epochs, SD_OPT_ATLEAST(0),
     .group = G_OUT, .help = "save every N epochs"},
    {.name = "save_n_epoch_ratio", .type = SD_OPT_INT, .dest = &c.save_n_epoch_ratio, .metavar = "N", .group = G_OUT,
     .help = "save every max(1, floor(epochs / N)) epochs (overrides --save_every_n_epochs; <= 0: off)"},
    {.name = "save_every_n_steps", .type = SD_OPT_INT, .dest = &c.save_every_n_steps, SD_OPT_ATLEAST(0),
     .group = G_OUT, .help = "save every N steps"},
    {.name = "save_last_n_epochs", .type = SD_OPT_INT, .dest = &c.save_last_n_epochs, SD_OPT_ATLEAST(0),
     .group = G_OUT, .help = "keep only the last N epoch saves"},
    {.name = "save_last_n_steps", .type = SD_OPT_INT, .dest = &c.save_last_n_steps, SD_OPT_ATLEAST(0),
     .group = G_OUT, .help = "keep only saves of the last N steps"},
    {.name = "save_last_n_epochs_state", .type = SD_OPT_INT, .dest = &c.save_last_n_epochs_state, SD_OPT_ATLEAST(0),
     .group = G_OUT, .help = "the same for states"},
    {.name = "save_last_n_steps_state", .type = SD_OPT_INT, .dest = &c.save_last_n_steps_state, SD_OPT_ATLEAST(0),
     .group = G_OUT, .help = "the same for states"},
    {.name = "save_state", .type = SD_OPT_FLAG, .dest = &c.save_state, .group = G_OUT,
     .help = "write a resumable state with every save and at the end"},
    {.name = "save_state_on_train_end", .type = SD_OPT_FLAG, .dest = &c.save_state_on_train_end, .group = G_OUT,
     .help = "write a resumable state at the end"},
    {.name = "resume", .type = SD_OPT_STRING, .dest = &c.resume, .metavar = "DIR", .group = G_OUT,
     .help = "continue from a state directory (everything restored), or from a kohya-ss train_network.py "
             "--save_state folder (LoRA; AdamW, AdamW8bit, Lion, SGDNesterov, Adafactor)"},
    {.name = "debug_dataset", .type = SD_OPT_FLAG, .dest = &a.debug_dataset, .group = G_DATA,
     .help = "print each batch's samples (key, sizes, loss weight, processed caption, crop, flip) in training "
             "order, then the validation set's (lora), and exit: no weights loaded, no latents cached, no image windows"},
    {.name = "initial_step", .type = SD_OPT_INT64, .dest = &a.initial_step, SD_OPT_ATLEAST(0), .metavar = "N",
     .group = G_OUT, .help = "start at optimizer step N, counted over all epochs (LoRA; the lr schedule does not "
                             "move: it is --resume's, else from 0; overrides --initial_epoch and --resume's step)"},
    {.name = "initial_epoch", .type = SD_OPT_INT, .dest = &a.initial_epoch, SD_OPT_ATLEAST(1), .metavar = "N",
     .group = G_OUT, .help = "start at epoch N (1 = the first): step (N-1) x steps per epoch (LoRA)"},
    {.name = "skip_until_initial_step", .type = SD_OPT_FLAG, .dest = &a.skip_until_initial_step, .group = G_OUT,
     .help = "with --initial_step/--initial_epoch: skip the batches before that step and count steps from it "
             "(without it only the first epoch changes and steps count from 0)"},
    {.name = "no_metadata", .type = SD_OPT_FLAG, .dest = &c.no_metadata, .group = G_OUT,
     .help = "only the minimum ss_* metadata"},
    {.name = "training_comment", .type = SD_OPT_STRING, .dest = &c.training_comment, .group = G_OUT,
     .help = "ss_training_comment"},
    {.name = "metadata_title", .type = SD_OPT_STRING, .dest = &c.metadata_title, .group = G_OUT, .help = "modelspec.title"},
    {.name = "metadata_author", .type = SD_OPT_STRING, .dest = &c.metadata_author, .group = G_OUT, .help = "modelspec.author"},
    {.name = "metadata_description", .type = SD_OPT_STRING, .dest = &c.metadata_description, .group = G_OUT,
     .help = "modelspec.description"},
    {.name = "metadata_license", .type = SD_OPT_STRING, .dest = &c.metadata_license, .group = G_OUT,
     .help = "modelspec.license"},
    {.name = "metadata_tags", .type = SD_OPT_STRING, .dest = &c.metadata_tags, .group = G_OUT, .help = "modelspec.tags"},
    {.name = "metadata_usage_hint", .type = SD_OPT_STRING, .dest = &c.metadata_usage_hint, .group = G_OUT,
     .help = "modelspec.usage_hint"},
    {.name = "metadata_thumbnail", .type = SD_OPT_STRING, .dest = &c.metadata_thumbnail, .metavar = "URL|FILE",
     .group = G_OUT, .help = "modelspec.thumbnail: a data: URL as given, or a file embedded as data:<mime>;base64,..."},
    {.name = "metadata_merged_from", .type = SD_OPT_STRING, .dest = &c.metadata_merged_from, .group = G_OUT,
     .help = "modelspec.merged_from"},
    {.name = "metadata_trigger_phrase", .type = SD_OPT_STRING, .dest = &c.metadata_trigger_phrase, .group = G_OUT,
     .help = "modelspec.trigger_phrase"},
    {.name = "metadata_preprocessor", .type = SD_OPT_STRING, .dest = &c.metadata_preprocessor, .group = G_OUT,
     .help = "modelspec.preprocessor"},
    {.name = "metadata_is_negative_embedding", .type = SD_OPT_STRING, .dest = &c.metadata_is_negative_embedding,
     .group = G_OUT, .help = "modelspec.is_negative_embedding (the string as given)"},
    /* sample images */
    {.name = "sample_prompts", .type = SD_OPT_STRING, .dest = &c.sample_prompts, .metavar = "FILE", .group = G_SAMPLE,
     .help = "prompts (.txt lines with --n --w --h --d --s --l --ss, .toml or .json); images go to OUTPUT_DIR/sample/"},
    {.name = "sample_every_n_steps", .type = SD_OPT_INT, .dest = &c.sample_every_n_steps, SD_OPT_ATLEAST(0),
     .metavar = "N", .group = G_SAMPLE, .help = "sample after every N-th optimizer step"},
    {.name = "sample_every_n_epochs", .type = SD_OPT_INT, .dest = &c.sample_every_n_epochs, SD_OPT_ATLEAST(0),
     .metavar = "N", .group = G_SAMPLE, .help = "sample at the end of every N-th epoch (--sample_every_n_steps is then ignored)"},
    {.name = "sample_at_first", .type = SD_OPT_FLAG, .dest = &c.sample_at_first, .group = G_SAMPLE,
     .help = "sample before the first step"},
    {.name = "sample_sampler", .type = SD_OPT_STRING, .dest = &c.sample_sampler, .def = "ddim", .metavar = "NAME",
     .group = G_SAMPLE, .help = "ddim, pndm, lms, euler, euler_a, heun, dpm_2, dpm_2_a, dpmsolver, dpmsolver++, dpmsingle "
                                "(k_lms, k_euler, k_euler_a, k_dpm_2, k_dpm_2_a: the same); a prompt's --ss wins"},
    /* validation */
    {.name = "validation_split", .type = SD_OPT_DOUBLE, .dest = &c.validation_split, .metavar = "F", .group = G_VAL,
     .help = "hold out this fraction of each DreamBooth subset's images for the validation loss (default 0.0; a "
             "dataset config's validation_split wins)"},
    {.name = "validation_seed", .type = SD_OPT_INT64, .dest = &c.validation_seed, .metavar = "N", .group = G_VAL,
     .help = "seed of the split shuffle and of the validation noise (default: --seed)"},
    {.name = "validate_every_n_steps", .type = SD_OPT_INT, .dest = &c.validate_every_n_steps, SD_OPT_ATLEAST(1),
     .metavar = "N", .group = G_VAL, .help = "also validate after every N-th optimizer step"},
    {.name = "validate_every_n_epochs", .type = SD_OPT_INT, .dest = &c.validate_every_n_epochs, SD_OPT_ATLEAST(1),
     .metavar = "N", .group = G_VAL, .help = "validate at the end of every N-th epoch (default: every epoch)"},
    {.name = "max_validation_steps", .type = SD_OPT_INT64, .dest = &c.max_validation_steps, SD_OPT_ATLEAST(0),
     .metavar = "N", .group = G_VAL, .help = "at most N validation batches per pass (default: all)"},
    /* logging */
    {.name = "logging_dir", .type = SD_OPT_STRING, .dest = &c.logging_dir, .metavar = "DIR", .group = G_LOG,
     .help = "TensorBoard event files under DIR/<prefix><time>/network_train"},
    {.name = "log_prefix", .type = SD_OPT_STRING, .dest = &c.log_prefix, .group = G_LOG, .help = "run directory prefix"},
    {.name = "log_tracker_name", .type = SD_OPT_STRING, .dest = &c.log_tracker_name, .group = G_LOG,
     .help = "run name (default network_train)"},
    {.name = "log_with", .type = SD_OPT_STRING, .dest = &a.log_with, .group = G_LOG,
     .help = "tensorboard (wandb is not supported)"},
    {.name = "log_jsonl", .type = SD_OPT_STRING, .dest = &c.log_jsonl, .metavar = "FILE", .group = G_LOG,
     .help = "one JSON line per step: step, epoch, loss, avr_loss, lr, grad_norm, sec_per_step"},
    {.name = "device", .type = SD_OPT_STRING, .dest = &a.device, .def = "cpu", .metavar = "cpu|cuda[:N]",
     .group = G_MODEL,
     .help = "where the networks run: the CPU, or CUDA GPU N (a build with CUDA=1); the optimizer, data and "
             "saving stay on the host"},
    {.name = "console_log_level", .type = SD_OPT_ENUM, .dest = &a.console_log_level, .def = "INFO",
     .choices = "DEBUG|INFO|WARNING|ERROR|CRITICAL", .group = G_LOG,
     .help = "messages shown: DEBUG, INFO, WARNING, ERROR or CRITICAL (= ERROR); given, it wins over SD_LOG"},
    {.name = "console_log_file", .type = SD_OPT_STRING, .dest = &a.console_log_file, .metavar = "FILE", .group = G_LOG,
     .help = "write the messages (stderr) to FILE instead, truncating it"},
    SD_OPT_THREADS(&a.threads),
    /* kohya options: accepted without effect, or refused (kohya[] below says why) */
    KOHYA_NOOP("xformers", SD_OPT_FLAG, &a.xformers, "attention is always memory-efficient here"),
    KOHYA_NOOP("sdpa", SD_OPT_FLAG, &a.sdpa, "attention is always memory-efficient here"),
    KOHYA_NOOP("mem_eff_attn", SD_OPT_FLAG, &a.mem_eff_attn, "attention is always memory-efficient here"),
    KOHYA_NOOP("diffusers_xformers", SD_OPT_FLAG, &a.diffusers_xformers, "attention is always memory-efficient here"),
    KOHYA_NOOP("torch_compile", SD_OPT_FLAG, &a.torch_compile, "no PyTorch to compile"),
    KOHYA_NOOP("dynamo_backend", SD_OPT_STRING, &a.dynamo_backend, "no PyTorch to compile"),
    KOHYA_NOOP("max_data_loader_n_workers", SD_OPT_INT, &a.max_data_loader_n_workers,
               "no data-loader processes: batches come from memory"),
    KOHYA_NOOP("persistent_data_loader_workers", SD_OPT_FLAG, &a.persistent_data_loader_workers,
               "no data-loader processes: batches come from memory"),
    KOHYA_NOOP("lowram", SD_OPT_FLAG, &a.lowram, "one way of loading the model here"),
    KOHYA_NOOP("highvram", SD_OPT_FLAG, &a.highvram, "no device cache to empty"),
    KOHYA_NOOP("disable_mmap_load_safetensors", SD_OPT_FLAG, &a.disable_mmap_load_safetensors,
               "one way of loading the model"),
    KOHYA_NOOP("cpu_offload_checkpointing", SD_OPT_FLAG, &a.cpu_offload_checkpointing, "no activation offloading"),
    KOHYA_NOOP("vae_batch_size", SD_OPT_INT, &a.vae_batch_size,
               "--cache_latents encodes one image at a time; the latents are the same"),
    KOHYA_NOOP("skip_cache_check", SD_OPT_FLAG, &a.skip_cache_check, "latent files are always checked"),
    KOHYA_NOOP("console_log_simple", SD_OPT_FLAG, &a.console_log_simple, "messages are always plain"),
    KOHYA_REFUSED("lr_scheduler_type", SD_OPT_STRING, &a.lr_scheduler_type),
    KOHYA_REFUSED("dataset_class", SD_OPT_STRING, &a.dataset_class),
    SD_OPT_END};

#define CACHE_AUG "when caching latents, either color_aug or random_crop cannot be used"
#define ATTN "attention here is always memory-efficient (chunked, exact softmax); nothing to switch"
#define LOADER "records and latents are read in this process, batches come from memory; there are no data-loader workers"
/* kohya options that have no effect here (one info line) or change the training in the reference and are
 * not implemented (refused, exit 2): given when set on the command line or in --config_file to anything but
 * false, 0, "" or an empty list. In a --config_file the names also match keys sd-train does not know
 * (o.unknown): conditioning_data_dir (the reference's train_network.py option that nothing reads: the masks
 * come from the dataset config's subset key) is said to have no effect from there. An entry here applies to a
 * known option too: remove it when the option becomes real. */
static const struct kohya_opt {
    const char *name;
    int refused;
    const char *why;
} kohya[] = {
    { "xformers", 0, ATTN },
    { "sdpa", 0, ATTN },
    { "mem_eff_attn", 0, ATTN },
    { "diffusers_xformers", 0, ATTN },
    { "torch_compile", 0, "there is no PyTorch model to compile" },
    { "dynamo_backend", 0, "there is no PyTorch model to compile" },
    { "max_data_loader_n_workers", 0, LOADER },
    { "persistent_data_loader_workers", 0, LOADER },
    { "lowram", 0, "there is no separate low-memory way of loading the model here; nothing to switch" },
    { "highvram", 0, "it only stops the reference emptying the CUDA cache while caching latents, which sd-train does "
                     "not do; nothing to switch" },
    { "disable_mmap_load_safetensors", 0, "the model is loaded one way here; nothing to switch" },
    { "cpu_offload_checkpointing", 0, "activations are not offloaded; --gradient_checkpointing recomputes them" },
    { "vae_batch_size", 0, "--cache_latents encodes one image at a time, and a latent does not depend on the batch "
                           "(sd-encode-latents --vae_batch_size batches)" },
    { "skip_cache_check", 0, "--cache_latents_to_disk reuses a latent file only when its sd_meta.json matches the "
                             "inputs; that check is not skipped" },
    { "console_log_simple", 0, "messages are always plain lines ('sd-train: message')" },
    { "lr_scheduler_type", 1, "custom scheduler classes are Python; use --lr_scheduler" },
    { "dataset_class", 1, "custom dataset classes are Python" },
    /* (not for --method controlnet, which reads it with --train_data_dir) */
    { "conditioning_data_dir", 0, "train_network.py parses it and never reads it (only the ControlNet training "
                                  "scripts do); conditioning-image masks come from a --dataset_config subset's "
                                  "conditioning_data_dir, with --masked_loss" },
};

/* A kohya value counts as given unless false, null, 0, "" or empty (consumes v). */
static int given(jv v)
{
    int k = jv_get_kind(v), t = k == JV_KIND_TRUE;
    if (k == JV_KIND_NUMBER) t = jv_number_value(v) != 0;
    if (k == JV_KIND_STRING) t = jv_string_length_bytes(jv_copy(v)) > 0;
    if (k == JV_KIND_ARRAY) t = jv_array_length(jv_copy(v)) > 0;
    if (k == JV_KIND_OBJECT) t = jv_object_length(jv_copy(v)) > 0;
    jv_free(v);
    return t;
}

/* The option's value if the command line or the config file set it, else null; or the value of a config key
 * sd-train does not know (names compared with '-' as '_'). *cfg = 1: it came from the config file. */
static jv opt_given_value(const sd_opts *o, const char *name, int *cfg)
{
    int src = sd_opts_source(o, name);
    *cfg = src == SD_SRC_CONFIG;
    if (src == SD_SRC_CMDLINE || src == SD_SRC_CONFIG)
        for (int i = 0; i < sd_opts_count(o); i++)
            if (!strcmp(sd_opts_at(o, i)->name, name)) return sd_opts_value_jv(o, i);
    for (int i = 0; i < o->nunknown; i++) {
        const char *k = o->unknown[i], *n = name;
        while (*k && (*k == *n || (*k == '-' && *n == '_'))) k++, n++;
        if (!*k && !*n) {
            *cfg = 1;
            return jv_copy(o->unknown_value[i]);
        }
    }
    return jv_null();
}

static int kohya_known(const char *key)
{
    for (size_t i = 0; i < sizeof kohya / sizeof *kohya; i++) {
        const char *k = key, *n = kohya[i].name;
        while (*k && (*k == *n || (*k == '-' && *n == '_'))) k++, n++;
        if (!*k && !*n) return 1;
    }
    return 0;
}

/* Subset / record keys sd-train refuses (exit 2): a subset of a --dataset_config, or a record of --data
 * (sd-merge-meta passes them through). color_aug / random_crop: with --cache_latents[_to_disk] (the
 * reference's assertion; face_crop_aug_range, which the reference ignores there, too), or on a record
 * with a 'latents' file (fixed latents cannot be augmented); custom_attributes: not implemented. (alpha_mask is implemented:
 * --masked_loss / --alpha_mask, the records' alpha_mask key.) */
static int refused_key(const sd_opts *o, jv obj, char *msg, size_t cap)
{
    (void)o;
    static const struct { const char *key, *why; } keys[] = {
        { "color_aug", NULL },
        { "random_crop", NULL },
        { "face_crop_aug_range", NULL },
        { "custom_attributes", "per-subset attributes for the reference's Python training code" },
    };
    if (jv_get_kind(obj) != JV_KIND_OBJECT) return 0;
    jv lat = jv_object_get(jv_copy(obj), jv_string("latents"));
    int has_lat = jv_get_kind(lat) == JV_KIND_STRING;
    jv_free(lat);
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        jv v = jv_object_get(jv_copy(obj), jv_string(keys[i].key));
        if (!jv_is_valid(v) || !given(jv_copy(v))) {
            jv_free(v);
            continue;
        }
        if (!keys[i].why && !c.cache_latents && !has_lat) {
            jv_free(v);
            continue;
        }
        jv d = jv_dump_string(v, 0);
        if (keys[i].why) snprintf(msg, cap, "%s = %s: not implemented: %s", keys[i].key, jv_string_value(d), keys[i].why);
        else if (c.cache_latents && i == 2)
            snprintf(msg, cap, "%s = %s: the face crop applies to images encoded at every step; with --cache_latents the "
                     "reference ignores it (refused here rather than ignored)", keys[i].key, jv_string_value(d));
        else if (c.cache_latents) snprintf(msg, cap, "%s = %s: %s", keys[i].key, jv_string_value(d), CACHE_AUG);
        else snprintf(msg, cap, "%s = %s: the record has a 'latents' file, which is fixed: the augmentation needs the "
                      "image encoded at every step (a record without 'latents', no --cache_latents)", keys[i].key,
                      jv_string_value(d));
        jv_free(d);
        return 1;
    }
    return 0;
}

typedef struct ds_ctx {
    sd_train_data *d;
    int bad, refused;
} ds_ctx;

static int ds_record(void *ctx, jv rec, const char *src, long line)
{
    ds_ctx *x = ctx;
    int rc = sd_train_data_add_record(x->d, &c, rec);
    jv_free(rec);
    if (rc == SD_ENOMEM || rc == SD_EUNSUPPORTED) return rc;
    if (rc == SD_EUSAGE) {   /* an augmentation the record's latents cannot have: refused (exit 2) */
        sd_record_error(src, line, "%s", sd_errmsg());
        x->refused = 1;
        return rc;
    }
    if (rc < 0) {
        sd_record_error(src, line, "%s", sd_errmsg());
        x->bad++;
    }
    return 0;
}

static void ds_error(void *ctx, const char *src, long line, const char *msg)
{
    ds_ctx *x = ctx;
    sd_record_error(src, line, "%s", msg);
    x->bad++;
}

static void ds_warning(void *ctx, const char *msg)
{
    (void)ctx;
    sd_warn("%s", msg);
}

/* Records of --dataset_config / the folder convention / --in_json (data/dataset_records.h). */
static int load_dataset(sd_opts *o, sd_train_data *d, int *bad, int *refused)
{
    jv cli = jv_object();
    if (a.resolution.n)
        cli = jv_object_set(cli, jv_string("resolution"),
                            JV_ARRAY(jv_number((double)a.resolution.i[0]),
                                     jv_number((double)a.resolution.i[a.resolution.n > 1 ? 1 : 0])));
    if (sd_opts_is_set(o, &c.train_batch_size)) cli = jv_object_set(cli, jv_string("batch_size"), jv_number(c.train_batch_size));
    if (a.dataset_repeats > 0) cli = jv_object_set(cli, jv_string("num_repeats"), jv_number(a.dataset_repeats));
    if (a.caption_extension) cli = jv_object_set(cli, jv_string("caption_extension"), jv_string(a.caption_extension));
    if (c.has_face_crop)
        cli = jv_object_set(cli, jv_string("face_crop_aug_range"),
                            JV_ARRAY(jv_number(c.face_crop[0]), jv_number(c.face_crop[1])));
    static const char *const names[] = { "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
                                         "bucket_no_upscale", "shuffle_caption", "keep_tokens", "keep_tokens_separator",
                                         "caption_separator", "caption_prefix", "caption_suffix", "flip_aug", "color_aug", "random_crop",
                                         "caption_dropout_rate", "caption_dropout_every_n_epochs",
                                         "caption_tag_dropout_rate", "enable_wildcard", "secondary_separator",
                                         "token_warmup_min", "token_warmup_step", "validation_split",
                                         "validation_seed", "alpha_mask" };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        int src = sd_opts_source(o, names[i]);
        if (src != SD_SRC_CMDLINE && src != SD_SRC_CONFIG) continue;
        for (int k = 0; k < sd_opts_count(o); k++)
            if (!strcmp(sd_opts_at(o, k)->name, names[i])) cli = jv_object_set(cli, jv_string(names[i]), sd_opts_value_jv(o, k));
    }
    sd_dataset_config cfg;
    int rc;
    unsigned cn_ok = c.masked_loss || c.method == SD_METHOD_CN ? SD_DC_CONTROLNET_OK : 0;
    if (a.dataset_config) {
        if (a.train_data_dir || a.reg_data_dir || a.in_json)
            sd_warn("--dataset_config is given: --train_data_dir, --reg_data_dir and --in_json are ignored");
        if (a.conditioning_data_dir && c.method == SD_METHOD_CN)
            sd_warn("--dataset_config is given: --conditioning_data_dir is ignored");
        rc = sd_dataset_config_load(a.dataset_config, cli, cn_ok, &cfg);
    } else if (c.method == SD_METHOD_CN && a.train_data_dir) {
        /* config_util.generate_controlnet_subsets_config_by_subdirs: one subset of train_data_dir itself */
        if (a.reg_data_dir || a.in_json)
            sd_warn("--method controlnet: --reg_data_dir and --in_json are not used (train_control_net.py)");
        jv sub = jv_object();
        sub = jv_object_set(sub, jv_string("image_dir"), jv_string(a.train_data_dir));
        if (a.conditioning_data_dir)
            sub = jv_object_set(sub, jv_string("conditioning_data_dir"), jv_string(a.conditioning_data_dir));
        sub = jv_object_set(sub, jv_string("num_repeats"), jv_number(1));
        jv ds = jv_object_set(jv_object(), jv_string("subsets"), JV_ARRAY(sub));
        jv root = jv_object_set(jv_object(), jv_string("datasets"), JV_ARRAY(ds));
        rc = sd_dataset_config_from_jv(root, a.train_data_dir, NULL, 0, cli, cn_ok, &cfg);
        jv_free(root);
    } else {
        rc = sd_dataset_config_folders(a.train_data_dir, a.reg_data_dir, a.in_json, cli, cn_ok, &cfg);
    }
    jv_free(cli);
    if (rc < 0) {
        sd_error("%s", sd_errmsg());
        sd_dataset_config_free(&cfg);
        return rc;
    }
    for (int i = 0; i < cfg.nwarnings; i++) sd_warn("%s", cfg.warnings[i]);
    char msg[512];
    for (int i = 0; i < cfg.ndatasets; i++)
        for (int j = 0; j < cfg.datasets[i].nsubsets; j++) {
            const sd_dc_subset *s = &cfg.datasets[i].subsets[j];
            if (!refused_key(o, s->params, msg, sizeof msg)) continue;
            int di = cfg.datasets[i].index;
            if (s->line > 0) sd_error("%s:%d: datasets[%d].subsets[%d]: %s", cfg.name, s->line, di, s->index, msg);
            else sd_error("%s: datasets[%d].subsets[%d]: %s", cfg.name, di, s->index, msg);
            sd_dataset_config_free(&cfg);
            *refused = 1;
            return SD_EUSAGE;
        }
    ds_ctx x = { d, 0, 0 };
    sd_dataset_sink sink = { .ctx = &x, .record = ds_record, .error = ds_error, .warning = ds_warning };
    rc = sd_dataset_records(&cfg, &sink);
    if (rc >= 0) rc = sd_train_data_set_config(d, &cfg, a.dataset_config != NULL);
    sd_dataset_config_free(&cfg);
    *bad += x.bad;
    if (x.refused) {
        *refused = 1;
        return SD_EUSAGE;
    }
    if (rc < 0) sd_error("%s", sd_errmsg());
    return rc;
}

int main(int argc, char **argv)
{
    sd_log_init("sd-train");
    sd_train_config_default(&c);
    memset(&a, 0, sizeof a);
    sd_opts o;
    if (sd_opts_init(&o, "sd-train", table) < 0) return sd_fatal(1);
    o.flags = SD_OPTS_CONFIG | SD_OPTS_LENIENT | SD_OPTS_NO_POSITIONAL;
    o.usage = "--method lora|db|ft --model MODEL --data RECORDS.jsonl [OPTIONS]";
    o.description = "Trains a LoRA network (kohya-ss/sd-scripts networks.lora, or LoRA-FA: networks.lora_fa) on SD1.x/SD2.x from records with "
                    "latent files or images, and saves it as a kohya LoRA file that A1111 and ComfyUI load; or, with --method "
                    "db / ft, trains the whole model (train_db.py / fine_tune.py; SDXL: sdxl_train.py) and saves full "
                    "checkpoints; with --method controlnet, a ControlNet of the frozen UNet on image / conditioning-image "
                    "pairs (train_control_net.py, SD1.x/SD2.x).";
    o.epilog = "Exit status: 0 done, 1 fatal error, 2 usage error, 130/143 interrupted (a resumable state "
               "was written).\nSee sd-train(1).";
    int ex = sd_cmdline_main(&o, argc, argv);
    if (ex >= 0) {
        sd_opts_free(&o);
        return ex;
    }
    if (sd_opts_source(&o, "console_log_level") == SD_SRC_CMDLINE || sd_opts_source(&o, "console_log_level") == SD_SRC_CONFIG) {
        static const int lv[] = { SD_LOG_DEBUG, SD_LOG_INFO, SD_LOG_WARN, SD_LOG_ERROR, SD_LOG_ERROR };
        sd_log_set_level(lv[a.console_log_level]);
    }
    if (a.console_log_file && *a.console_log_file) {   /* the reference's logging.FileHandler(mode="w") */
        int fd = open(a.console_log_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            sd_error("cannot open %s: %s", a.console_log_file, strerror(errno));
            sd_opts_free(&o);
            return 1;
        }
        fflush(stderr);
        if (dup2(fd, 2) < 0) {
            sd_error("cannot write the messages to %s: %s", a.console_log_file, strerror(errno));
            sd_opts_free(&o);
            return 1;
        }
        close(fd);
    }
    int usage = 0;
    /* kohya options (kohya[] above): one line each when given */
    for (size_t i = 0; i < sizeof kohya / sizeof *kohya; i++) {
        int cfg;
        if (!given(opt_given_value(&o, kohya[i].name, &cfg))) continue;
        if (!strcmp(kohya[i].name, "conditioning_data_dir") && a.method &&
            (!strcmp(a.method, "controlnet") || !strcmp(a.method, "control_net")))
            continue;
        sd_log(kohya[i].refused ? SD_LOG_ERROR : SD_LOG_INFO, "%s%s%s: %s: %s", cfg ? o.config_file : "--",
               cfg ? ": " : "", kohya[i].name, kohya[i].refused ? "not implemented" : "no effect", kohya[i].why);
        usage |= kohya[i].refused;
    }
    int nunused = 0;
    char list[512] = "";
    for (int i = 0; i < o.nunknown; i++) {
        if (kohya_known(o.unknown[i])) continue;
        if (strlen(list) < 400) {
            if (nunused) strcat(list, ", ");
            strncat(list, o.unknown[i], 100);
        }
        nunused++;
    }
    if (nunused)
        sd_warn("%s: %d key%s not used by sd-train: %s%s", o.config_file, nunused, nunused == 1 ? "" : "s", list,
                strlen(list) >= 400 ? ", ..." : "");
    sd_train_method method = SD_METHOD_LORA;
    if (sd_train_method_parse(a.method, &method) < 0) {
        sd_error("%s", sd_errmsg());
        usage = 1;
    }
    c.method = (int)method;
    c.ti.on = method == SD_METHOD_TI;
    if (c.ti.on && sd_opts_source(&o, "save_model_as") <= SD_SRC_DEFAULT) c.save_model_as = "pt";   /* the reference's default */
    if (!c.ti.on) {   /* textual-inversion options are not silently ignored by the other methods */
        static const char *const ti_only[] = { "token_string", "num_vectors_per_token", "init_word", "weights",
                                               "use_object_template", "use_style_template" };
        for (size_t i = 0; i < sizeof ti_only / sizeof *ti_only; i++)
            if (sd_opts_source(&o, ti_only[i]) > SD_SRC_DEFAULT) {
                sd_error("--%s is an option of --method ti (this run is --method %s)", ti_only[i], a.method);
                usage = 1;
            }
    }
    if (c.controlnet_model && method != SD_METHOD_CN) {
        sd_error("--controlnet_model_name_or_path is an option of --method controlnet (this run is --method %s)", a.method);
        usage = 1;
    }
    if (!usage) a.method = sd_train_method_name(method);   /* aliases: one name in the state's options */
    /* options of one method only: refused with the others */
    static const char *const lora_only[] = { "network_module", "network_dim", "network_alpha", "network_dropout",
                                             "network_args", "network_weights", "dim_from_weights",
                                             "network_train_unet_only", "network_train_text_encoder_only", "unet_lr",
                                             "text_encoder_lr", "scale_weight_norms", "no_metadata",
                                             "training_comment", "base_weights", "base_weights_multiplier",
                                             "initial_step", "initial_epoch", "skip_until_initial_step" };
    /* the SDXL caches: LoRA and (SDXL) db/ft, not TI */
    static const char *const ti_refused[] = { "cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk" };
    for (size_t i = 0; i < sizeof ti_refused / sizeof *ti_refused && method == SD_METHOD_TI; i++)
        if (sd_opts_source(&o, ti_refused[i]) == SD_SRC_CMDLINE || sd_opts_source(&o, ti_refused[i]) == SD_SRC_CONFIG) {
            sd_error("--%s is a LoRA option: not used by --method %s", ti_refused[i], a.method);
            usage = 1;
        }
    static const char *const full_only[] = { "learning_rate_te", "use_safetensors", "stop_text_encoder_training",
                                             "train_text_encoder", "no_token_padding", "learning_rate_te1",
                                             "learning_rate_te2", "block_lr", "fused_optimizer_groups",
                                             "fused_backward_pass" };
    for (size_t i = 0; i < sizeof lora_only / sizeof *lora_only && method != SD_METHOD_LORA; i++) {
        int src = sd_opts_source(&o, lora_only[i]);
        if (src == SD_SRC_CMDLINE || src == SD_SRC_CONFIG) {
            sd_error("--%s is a LoRA option: not used by --method %s", lora_only[i], a.method);
            usage = 1;
        }
    }
    for (size_t i = 0; i < sizeof full_only / sizeof *full_only; i++) {
        int src = sd_opts_source(&o, full_only[i]);
        if (src != SD_SRC_CMDLINE && src != SD_SRC_CONFIG) continue;
        const char *name = full_only[i];
        /* db with --train_text_encoder: SDXL's (sdxl_train.py); refused for SD1/SD2 once the model is open */
        int ok = method == SD_METHOD_DB ? 1
               : method == SD_METHOD_FT ? strcmp(name, "stop_text_encoder_training") && strcmp(name, "no_token_padding")
                                        : 0;
        if (!ok) {
            sd_error("--%s is an option of %s: not used by --method %s", name,
                     !strcmp(name, "train_text_encoder") ? "--method ft"
                     : !strcmp(name, "stop_text_encoder_training") || !strcmp(name, "no_token_padding") ? "--method db"
                                                                                                         : "--method db/ft",
                     a.method);
            usage = 1;
        }
    }
    if (method == SD_METHOD_DB || method == SD_METHOD_FT) {
        /* the reference's None: the source model's format */
        int src = sd_opts_source(&o, "save_model_as");
        if (src != SD_SRC_CMDLINE && src != SD_SRC_CONFIG) c.save_model_as = NULL;
        c.has_stop_text_encoder_training = sd_opts_source(&o, "stop_text_encoder_training") != SD_SRC_NONE;
        if (sd_opts_source(&o, "learning_rate_te") == SD_SRC_NONE) c.learning_rate_te = NAN;
        if (sd_opts_source(&o, "learning_rate_te1") == SD_SRC_NONE) c.learning_rate_te1 = NAN;
        if (sd_opts_source(&o, "learning_rate_te2") == SD_SRC_NONE) c.learning_rate_te2 = NAN;
    }
    if (a.log_with && strcmp(a.log_with, "tensorboard")) {
        sd_error("--log_with %s is not supported (tensorboard is)", a.log_with);
        usage = 1;
    }
    if (c.cache_latents_to_disk) c.cache_latents = 1; /* implies --cache_latents, as in the reference */
    if (c.cache_text_encoder_outputs_to_disk) c.cache_text_encoder_outputs = 1;
    int have_ds = a.dataset_config || a.train_data_dir || a.reg_data_dir || a.in_json;
    if (have_ds && a.data) {
        sd_error("--data and --dataset_config/--train_data_dir/--in_json exclude each other");
        usage = 1;
    }
    if (a.face_crop_aug_range && *a.face_crop_aug_range) {   /* the reference's "low,high", low <= high */
        char *e1 = NULL, *e2 = NULL;
        double lo = strtod(a.face_crop_aug_range, &e1), hi = e1 && *e1 == ',' ? strtod(e1 + 1, &e2) : NAN;
        if (!e2 || *e2 || !isfinite(lo) || !isfinite(hi) || !(lo <= hi) || !(lo > 0)) {
            sd_error("--face_crop_aug_range %s: face_crop_aug_range must be two floats 'low,high' with 0 < low <= high",
                     a.face_crop_aug_range);
            usage = 1;
        } else {
            c.has_face_crop = 1, c.face_crop[0] = lo, c.face_crop[1] = hi;
            if (c.cache_latents) {
                sd_error("--face_crop_aug_range: the face crop applies to images encoded at every step; with "
                         "--cache_latents the reference ignores it (refused here rather than ignored)");
                usage = 1;
            }
        }
    }
    if (c.cache_latents && (c.color_aug || c.random_crop)) {   /* train_network.py's assertion */
        sd_error("--%s: %s", c.color_aug ? "color_aug" : "random_crop", CACHE_AUG);
        usage = 1;
    }
    if (!a.data && !have_ds) {
        sd_error("--data FILE|- (records with 'latents' from sd-encode-latents) or --dataset_config / --train_data_dir is required");
        usage = 1;
    }
    if (!c.model) {
        sd_error("--pretrained_model_name_or_path (--model) is required");
        usage = 1;
    }
    /* alpha: an int unless it came from the command line (argparse float) or is fractional */
    char *end;
    double al = strtod(a.network_alpha, &end);
    if (*end || !isfinite(al)) {
        sd_error("option '--network_alpha': invalid number '%s'", a.network_alpha);
        usage = 1;
    }
    /* the reference takes 1.0 for files without a multiplier and ignores extra multipliers: refused here */
    if (a.base_weights_multiplier.n > a.base_weights.n) {
        sd_error("--base_weights_multiplier: %d value%s for %d --base_weights file%s", a.base_weights_multiplier.n,
                 a.base_weights_multiplier.n == 1 ? "" : "s", a.base_weights.n, a.base_weights.n == 1 ? "" : "s");
        usage = 1;
    }
    for (int i = 0; i < a.base_weights_multiplier.n; i++)
        if (!isfinite(a.base_weights_multiplier.d[i])) {
            sd_error("option '--base_weights_multiplier': invalid number %g", a.base_weights_multiplier.d[i]);
            usage = 1;
            break;
        }
    for (int i = 0; i < a.text_encoder_lr.n; i++)
        if (!isfinite(a.text_encoder_lr.d[i])) {
            sd_error("option '--text_encoder_lr': invalid number %g", a.text_encoder_lr.d[i]);
            usage = 1;
            break;
        }
    if (usage) {
        fprintf(stderr, "Try 'sd-train --help'.\n");
        sd_opts_free(&o);
        return 2;
    }
    c.network_alpha = al;
    c.network_alpha_is_int = sd_opts_source(&o, "network_alpha") != SD_SRC_CMDLINE && al == floor(al);
    c.network_args = &a.network_args;
    c.base_weights = &a.base_weights;
    c.base_weights_multiplier = &a.base_weights_multiplier;
    c.optimizer_args = &a.optimizer_args;
    c.lr_scheduler_args = &a.lr_scheduler_args;
    c.has_lr_scheduler_timescale = sd_opts_source(&o, "lr_scheduler_timescale") != SD_SRC_NONE;
    if (sd_opts_source(&o, "lr_scheduler_min_lr_ratio") == SD_SRC_NONE) c.lr_scheduler_min_lr_ratio = NAN;
    else if (isnan(c.lr_scheduler_min_lr_ratio)) {
        fprintf(stderr, "sd-train: option '--lr_scheduler_min_lr_ratio': invalid number\nTry 'sd-train --help'.\n");
        sd_opts_free(&o);
        return 2;
    }
    c.lr_scheduler_num_cycles_given = sd_opts_source(&o, "lr_scheduler_num_cycles") > SD_SRC_DEFAULT;
    c.lr_scheduler_power_given = sd_opts_source(&o, "lr_scheduler_power") > SD_SRC_DEFAULT;
    c.lr_warmup_steps_given = sd_opts_source(&o, "lr_warmup_steps") > SD_SRC_DEFAULT;
    c.max_train_steps = a.max_train_steps;
    /* train_network.py: --initial_step wins over --initial_epoch */
    if (sd_opts_source(&o, "initial_step") > SD_SRC_DEFAULT) c.initial_mode = 1, c.initial_step = a.initial_step;
    else if (sd_opts_source(&o, "initial_epoch") > SD_SRC_DEFAULT) c.initial_mode = 2, c.initial_step = a.initial_epoch;
    c.skip_until_initial_step = a.skip_until_initial_step;
    c.debug_dataset = a.debug_dataset;
    c.token_warmup_step_f = a.token_warmup_step;
    c.caption.separator = a.caption_separator;
    c.caption.keep_tokens_separator = a.keep_tokens_separator;
    if (sd_opts_source(&o, "seed") == SD_SRC_NONE) c.seed = -1;
    if (sd_opts_source(&o, "unet_lr") == SD_SRC_NONE) c.unet_lr = NAN;
    /* --text_encoder_lr is a list (nargs="*") in the reference; train_network.py passes networks.lora
       the first value, None for an empty list, and writes that value as ss_text_encoder_lr */
    c.text_encoder_lr = a.text_encoder_lr.n > 0 ? a.text_encoder_lr.d[0] : NAN;
    if (a.text_encoder_lr.n > 1)
        sd_warn("--text_encoder_lr: %d values given; LoRA uses the first (%g) for every text encoder, as the "
                "reference's networks.lora", a.text_encoder_lr.n, a.text_encoder_lr.d[0]);
    if (sd_opts_source(&o, "validation_split") == SD_SRC_NONE) c.validation_split = NAN;
    else if (!isfinite(c.validation_split)) {
        fprintf(stderr, "sd-train: option '--validation_split': invalid number\nTry 'sd-train --help'.\n");
        sd_opts_free(&o);
        return 2;
    }
    c.has_validation_seed = sd_opts_source(&o, "validation_seed") != SD_SRC_NONE;
    if (sd_opts_source(&o, "max_validation_steps") == SD_SRC_NONE) c.max_validation_steps = -1;
    if (c.save_precision && strcmp(c.save_precision, "float") && strcmp(c.save_precision, "fp16") &&
        strcmp(c.save_precision, "bf16")) {
        fprintf(stderr, "sd-train: option '--save_precision': invalid choice '%s' (choose from float, fp16, bf16)\n"
                        "Try 'sd-train --help'.\n", c.save_precision);
        sd_opts_free(&o);
        return 2;
    }
    if (sd_device_parse(a.device, &c.device_index) < 0) {
        fprintf(stderr, "sd-train: %s\nTry 'sd-train --help'.\n", sd_errmsg());
        sd_opts_free(&o);
        return 2;
    }
    if (a.resolution.n) {
        c.reso_w = (int)a.resolution.i[0];
        c.reso_h = (int)a.resolution.i[a.resolution.n > 1 ? 1 : 0];
    }
    c.threads = a.threads;
    if (sd_threads_init(a.threads) < 0) {
        sd_opts_free(&o);
        return sd_fatal(1);
    }
    c.threads = sd_threads_get();
    /* options snapshot for the state (what --output_config would write) */
    jv snap = jv_object();
    for (int i = 0; i < sd_opts_count(&o); i++) {
        const sd_opt *op = sd_opts_at(&o, i);
        if (!op->dest || !strcmp(op->name, "threads") || !strcmp(op->name, "resume") || !strcmp(op->name, "data") ||
            !strcmp(op->name, "config_file") || !strcmp(op->name, "output_config") || !strcmp(op->name, "help") ||
            !strcmp(op->name, "version"))
            continue;
        snap = jv_object_set(snap, jv_string(op->name), sd_opts_value_jv(&o, i));
    }
    char *snap_text = NULL;
    size_t snap_n = 0;
    if (sd_json_dump(snap, &snap_text, &snap_n)) {
        sd_opts_free(&o);
        return sd_fatal(1);
    }
    c.options_json = snap_text;
    /* records */
    sd_train_data d;
    sd_train_data_init(&d);
    int bad = 0, fatal = 0, refused = 0;
    if (have_ds) {
        if (load_dataset(&o, &d, &bad, &refused) < 0) fatal = 1;
    } else {
        sd_jsonl_reader *r = sd_jsonl_open_path(a.data);
        if (!r) {
            sd_error("%s", sd_errmsg());
            free(snap_text);
            sd_opts_free(&o);
            return 1;
        }
        const char *src = sd_jsonl_name(r);
        for (;;) {
            jv rec;
            long line = 0;
            int rc = sd_jsonl_next(r, &rec, &line);
            if (rc == 0) break;
            if (rc == SD_EFORMAT || rc == SD_ERANGE) {
                sd_error("%s", sd_errmsg());
                bad++;
                continue;
            }
            if (rc < 0) {
                sd_error("%s", sd_errmsg());
                fatal = 1;
                break;
            }
            char msg[512];
            if (refused_key(&o, rec, msg, sizeof msg)) {
                sd_error("%s:%ld: %s", src, line, msg);
                jv_free(rec);
                fatal = refused = 1;
                break;
            }
            rc = sd_train_data_add_record(&d, &c, rec);
            jv_free(rec);
            if (rc == SD_ENOMEM || rc == SD_EUNSUPPORTED || rc == SD_EUSAGE) {
                fatal = 1;
                refused |= rc == SD_EUSAGE;
                if (rc == SD_EUSAGE) sd_error("%s:%ld: %s", src, line, sd_errmsg());
                else sd_error("%s", sd_errmsg());
                break;
            }
            if (rc < 0) {
                sd_record_error(src, line, "%s", sd_errmsg());
                bad++;
            }
        }
        sd_jsonl_close(r);
    }
    if (fatal || bad) {
        if (bad && !refused) sd_error("%d record%s could not be used; not training on a partial set", bad, bad == 1 ? "" : "s");
        sd_train_data_free(&d);
        free(snap_text);
        sd_opts_free(&o);
        return refused ? 2 : 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    c.stop = &g_stop;
    if (c.metadata_thumbnail && *c.metadata_thumbnail && strncmp(c.metadata_thumbnail, "data:", 5) &&
        access(c.metadata_thumbnail, R_OK))   /* the reference warns and leaves modelspec.thumbnail out */
        sd_warn("--metadata_thumbnail %s: %s: the saved files carry no modelspec.thumbnail", c.metadata_thumbnail,
                strerror(errno));
    int rc = sd_train_run(&c, &d);
    int exit_code = 0;
    if (rc == SD_EINTR) {
        sd_info("interrupted: resumable state written to %s (continue with --resume %s)", c.state_written,
                c.state_written);
        exit_code = c.stop_signal == SIGTERM ? 143 : 130;
    } else if (rc == SD_EUSAGE) {
        sd_error("%s", sd_errmsg());
        fprintf(stderr, "Try 'sd-train --help'.\n");
        exit_code = 2;
    } else if (rc) {
        exit_code = sd_fatal(1);
    }
    free(c.state_written);
    sd_train_data_free(&d);
    free(snap_text);
    sd_opts_free(&o);
    return exit_code;
}
