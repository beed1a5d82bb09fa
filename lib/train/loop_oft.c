/* --method lora --network_module networks.oft: kohya's OFT network (train/oft_network.h) set up for
 * a training run: its options (network_args enable_all_linear / enable_conv; the LoRA-only options
 * refused), --network_weights and --dim_from_weights, and its one optimizer group. The blocks live
 * in R->net.reg (R->net holds no LoRA modules), so the optimizer, the state directories, the device
 * moves and the gradient zeroing of the LoRA path work unchanged. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/log.h"
#include "io/safetensors.h"
#include "train/loop_internal.h"

int loop_is_oft(const sd_train_config *c) { return c->network_module && !strcmp(c->network_module, "networks.oft"); }

/* The options OFTNetwork has no use for: refused rather than ignored. */
static int check_options(const sd_train_config *c)
{
    if (c->network_dropout > 0)
        return sd_err(SD_EUSAGE, "--network_dropout: networks.oft has no dropout (the reference ignores it)");
    if (c->scale_weight_norms > 0)
        return sd_err(SD_EUSAGE, "--scale_weight_norms: networks.oft does not support max-norm regularization "
                      "(the reference warns and turns it off)");
    if (c->train_text_encoder_only)
        return sd_err(SD_EUSAGE, "--network_train_text_encoder_only: networks.oft has UNet modules only");
    if (!isnan(c->text_encoder_lr))
        return sd_err(SD_EUSAGE, "--text_encoder_lr: networks.oft has no text-encoder modules");
    return SD_OK;
}

/* network_args: enable_all_linear=, enable_conv= (the reference's bool(value): any non-empty value
 * is true); anything else is refused. */
static int parse_args(const sd_train_config *c, int *all_linear, int *conv)
{
    *all_linear = *conv = 0;
    for (int i = 0; c->network_args && i < c->network_args->n; i++) {
        const char *it = c->network_args->s[i], *eq = strchr(it, '=');
        if (!eq) return sd_err(SD_EUSAGE, "--network_args %s: expected key=value", it);
        size_t kl = (size_t)(eq - it);
        int v = eq[1] != 0;
        if (kl == 17 && !strncmp(it, "enable_all_linear", kl)) *all_linear = v;
        else if (kl == 11 && !strncmp(it, "enable_conv", kl)) *conv = v;
        else
            return sd_err(SD_EUSAGE, "--network_args %s: not an option of networks.oft (enable_all_linear, "
                          "enable_conv)", it);
    }
    return SD_OK;
}

/* One group, as OFTNetwork.prepare_optimizer_params: every module at --unet_lr, else --learning_rate. */
static int oft_groups(run *R)
{
    sd_lora_groups *g = &R->groups;
    memset(g, 0, sizeof *g);
    g->desc = calloc(1, sizeof *g->desc);
    g->names = calloc(1, sizeof *g->names);
    g->params = calloc(R->oft.n + 1, sizeof *g->params);
    if (!g->desc || !g->names || !g->params) {
        sd_lora_groups_free(g);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < R->oft.n; i++) g->params[i] = R->oft.mods[i].blocks;
    double lr = isnan(R->c->unet_lr) ? R->c->learning_rate : R->c->unet_lr;
    snprintf(g->names[0], sizeof g->names[0], "unet");
    g->desc[0].name = g->names[0];
    g->desc[0].lr = lr;
    g->desc[0].params = g->params;
    g->desc[0].count = R->oft.n;
    g->n = lr != 0 ? 1 : 0;
    return SD_OK;
}

int loop_setup_oft(run *R)
{
    sd_train_config *c = R->c;
    int rc = check_options(c);
    if (rc) return rc;
    sd_oft_network_opts o;
    memset(&o, 0, sizeof o);
    int alpha_int = c->network_alpha_is_int;
    o.dim = c->network_dim > 0 ? c->network_dim : 4;
    o.alpha = isnan(c->network_alpha) ? 1.0 : c->network_alpha;
    o.sdxl = R->sdxl;
    o.multiplier = 1.0f;
    rc = parse_args(c, &o.all_linear, &o.conv);
    if (rc) return rc;
    sd_safetensors *wst = NULL;
    if (c->network_weights) {
        rc = sd_safetensors_open(c->network_weights, &wst);
        if (rc) return rc;
        if (c->dim_from_weights && c->network_args && c->network_args->n) {
            sd_safetensors_close(wst);
            return sd_err(SD_EUSAGE, "--network_args with --dim_from_weights: networks.oft takes its targets from "
                          "the file then");
        }
        if (c->dim_from_weights) {
            /* create_network_from_weights: dim, alpha and the targets from the file */
            sd_oft_file_info fi;
            rc = sd_oft_file_scan(wst, &fi);
            if (rc) {
                sd_safetensors_close(wst);
                return rc;
            }
            o.dim = fi.dim;
            o.alpha = fi.alpha;
            alpha_int = fi.alpha_int;
            o.all_linear = fi.all_linear;
            o.conv = fi.conv;
        }
    }
    if (o.alpha >= 1)
        sd_warn("network_alpha is too large (>=1, maybe default value is too large), please consider to set smaller "
                "value like 1e-3");
    /* the blocks in R->net.reg: R->net is an empty LoRA network that owns the registry */
    memset(&R->net, 0, sizeof R->net);
    sd_params_init(&R->net.reg);
    R->net.rt.seed = R->seed;
    R->have_net = 1;
    rc = sd_oft_network_build(&R->oft, &R->net.reg, R->unet, &o);
    if (!rc) R->have_oft = 1;
    R->oft.alpha_int = alpha_int;
    if (!rc) rc = sd_params_alloc(&R->net.reg, SD_DEV_CPU);
    if (!rc) rc = sd_oft_network_attach(&R->oft, &R->ctx);
    if (!rc && wst) {
        size_t loaded = 0;
        rc = sd_oft_file_load(wst, &R->oft, 1, &loaded);
        if (!rc) sd_info("loaded %zu OFT modules from %s", loaded, c->network_weights);
    }
    sd_safetensors_close(wst);
    if (rc) return rc;
    /* for the metadata: ss_network_dim / ss_network_alpha are the options' values, as the LoRA path
       writes them (the reference's args.network_dim / args.network_alpha, also with --dim_from_weights) */
    rc = sd_lora_net_args_parse(&R->nargs, R->sdxl, c->network_dim > 0 ? c->network_dim : 4,
                                isnan(c->network_alpha) ? 1.0 : c->network_alpha, NULL, 0);
    if (rc) return rc;
    sd_info("create OFT network. num blocks: %d, constraint: %g, multiplier: 1, enable_conv: %s, enable_all_linear: "
            "%s; %zu UNet modules", o.dim, o.alpha, o.conv ? "True" : "False", o.all_linear ? "True" : "False",
            R->oft.n);
    rc = oft_groups(R);
    if (rc) return rc;
    if (!R->groups.n) return sd_err(SD_EINVAL, "every parameter group has learning rate 0: nothing to train");
    return SD_OK;
}
