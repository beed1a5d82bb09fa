/* --method lora --network_module lycoris.kohya with a weight-delta algorithm (algo=loha, lokr): the
 * network (train/lyco_network.h) set up for a training run, --network_weights, and
 * LycorisNetworkKohya.prepare_optimizer_params's groups. The factors live in R->net.reg (R->net holds
 * no LoRA modules), so the optimizer, the state directories, the device moves and the gradient
 * zeroing of the LoRA path work unchanged; the modules read R->net.rt (step, training) for
 * module_dropout. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/log.h"
#include "io/safetensors.h"
#include "train/loop_internal.h"

/* assemble_params: text-encoder modules' parameters at text_encoder_lr (else the learning rate), then
   the UNet's at unet_lr (else the learning rate); a group at LR 0 is left out */
static int lyco_groups(run *R)
{
    const sd_train_config *c = R->c;
    sd_lora_groups *g = &R->groups;
    memset(g, 0, sizeof *g);
    size_t np = SD_LYCO_NP * R->lyn.n;
    g->desc = calloc(2, sizeof *g->desc);
    g->names = calloc(2, sizeof *g->names);
    g->params = calloc(np + 1, sizeof *g->params);
    if (!g->desc || !g->names || !g->params) {
        sd_lora_groups_free(g);
        return sd_err(SD_ENOMEM, "out of memory");
    }
    size_t used = 0;
    for (int te = 1; te >= 0; te--) {
        double lr = te ? (isnan(c->text_encoder_lr) ? c->learning_rate : c->text_encoder_lr)
                       : (isnan(c->unet_lr) ? c->learning_rate : c->unet_lr);
        size_t first = used;
        for (size_t i = 0; i < R->lyn.n; i++)
            if (R->lyn.is_te[i] == te)
                for (int k = 0; k < SD_LYCO_NP; k++)
                    if (R->lyn.mods[i].p[k]) g->params[used++] = R->lyn.mods[i].p[k];
        if (used == first || lr == 0) {
            used = first;
            continue;
        }
        snprintf(g->names[g->n], sizeof g->names[g->n], "%s", te ? "textencoder" : "unet");
        g->desc[g->n].name = g->names[g->n];
        g->desc[g->n].lr = lr;
        g->desc[g->n].params = g->params + first;
        g->desc[g->n].count = used - first;
        g->n++;
    }
    return SD_OK;
}

int loop_setup_lyco_delta(run *R, const sd_lycoris_args *la)
{
    sd_train_config *c = R->c;
    if (c->dim_from_weights)
        return sd_err(SD_EUSAGE, "--dim_from_weights: not supported with lycoris.kohya algo=%s here", la->algo);
    /* the layer would run with W + ΔW rounded back to float8 (LyCORIS's merge adds to the float8 weight too) */
    if (c->fp8_base || c->fp8_base_unet)
        return sd_err(SD_EUSAGE, "%s: not supported with lycoris.kohya algo=%s here (algo=lora/locon is)",
                      c->fp8_base ? "--fp8_base" : "--fp8_base_unet", la->algo);
    sd_lora_network_opts no;
    memset(&no, 0, sizeof no);
    no.args = &R->nargs;
    no.with_unet = !c->train_text_encoder_only;
    no.with_te = !c->train_unet_only;
    no.seed = R->seed;
    no.sdxl = R->sdxl;
    no.te2 = R->clip2;
    no.lycoris = 1;
    no.lyco_targets = la->targets;
    no.rs_lora = la->rs_lora;
    /* the factors in R->net.reg: R->net is an empty LoRA network that owns the registry */
    memset(&R->net, 0, sizeof R->net);
    sd_params_init(&R->net.reg);
    R->net.rt.seed = R->seed;
    R->have_net = 1;
    int rc = sd_lyco_network_build(&R->lyn, &R->net.reg, R->unet, R->clip, &no, la, (float)R->nargs.module_dropout,
                                   &R->net.rt);
    if (rc) return rc;
    R->have_lyn = 1;
    rc = sd_params_alloc(&R->net.reg, SD_DEV_CPU);
    if (!rc) rc = sd_lyco_network_attach(&R->lyn, R->seed);
    if (!rc && c->network_weights) {
        sd_safetensors *wst = NULL;
        size_t loaded = 0;
        rc = sd_safetensors_open(c->network_weights, &wst);
        if (!rc && R->sdxl && R->unet) rc = sd_lora_file_sdxl_to_sgm(wst, R->unet, NULL);
        if (!rc) rc = sd_lyco_file_load(wst, &R->lyn, &loaded);
        sd_safetensors_close(wst);
        if (!rc) sd_info("loaded %zu LyCORIS modules from %s", loaded, c->network_weights);
    }
    if (rc) return rc;
    sd_info("LyCORIS (algo %s%s%s): %zu text-encoder modules, %zu UNet modules (dim %d, alpha %g, conv dim %d, conv "
            "alpha %g)", la->algo, la->bypass_mode ? ", bypass mode" : "", la->rs_lora ? ", rs_lora" : "", R->lyn.n_te,
            R->lyn.n - R->lyn.n_te, R->nargs.network_dim, R->nargs.network_alpha, R->nargs.conv_dim, R->nargs.conv_alpha);
    rc = lyco_groups(R);
    if (rc) return rc;
    if (!R->groups.n) return sd_err(SD_EINVAL, "every parameter group has learning rate 0: nothing to train");
    return SD_OK;
}
