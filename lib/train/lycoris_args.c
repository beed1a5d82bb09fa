/* --network_module lycoris.kohya: the network_args of LyCORIS's create_network (see lycoris.h). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "train/lora_network.h"
#include "train/lycoris.h"
#include "train/pyfmt.h"

/* Python's float(str) / int(str) of a stripped value (no underscores, no "inf" games needed here). */
static int num(const char *k, const char *v, int want_int, double *out)
{
    char buf[64];
    size_t n = strlen(v);
    while (n && isspace((unsigned char)*v)) v++, n--;
    while (n && isspace((unsigned char)v[n - 1])) n--;
    if (!n || n >= sizeof buf) return sd_err(SD_EUSAGE, "--network_args %s=%s: not a number", k, v);
    memcpy(buf, v, n);
    buf[n] = 0;
    char *end;
    if (want_int) {
        const char *p = buf + (*buf == '+' || *buf == '-');
        if (!*p) return sd_err(SD_EUSAGE, "--network_args %s=%s: expected a whole number", k, v);
        for (; *p; p++)
            if (!isdigit((unsigned char)*p)) return sd_err(SD_EUSAGE, "--network_args %s=%s: expected a whole number", k, v);
        *out = (double)strtol(buf, NULL, 10);
        return SD_OK;
    }
    *out = strtod(buf, &end);
    if (*end) return sd_err(SD_EUSAGE, "--network_args %s=%s: not a number", k, v);
    return SD_OK;
}

/* LyCORIS's str_bool: str(value).lower() != "false" */
static int str_bool(const char *v)
{
    if (strlen(v) != 5) return 1;
    char l[6];
    for (int i = 0; i < 5; i++) l[i] = (char)tolower((unsigned char)v[i]);
    l[5] = 0;
    return strcmp(l, "false") != 0;
}

int sd_lycoris_args_parse(sd_lycoris_args *la, sd_lora_net_args *a, int is_sdxl, int network_dim, double network_alpha,
                          const char *const *items, int n)
{
    memset(la, 0, sizeof *la);
    int rc = sd_lora_net_args_parse(a, is_sdxl, network_dim, network_alpha, NULL, 0);
    if (rc) return rc;
    /* kwargs: a dict, a repeated key takes the last value in its first place */
    sd_py_kwargs kw;
    rc = sd_py_kwargs_parse(&kw, items, n, "--network_args");
    if (rc) return rc;
    /* the deprecated names are copied onto use_tucker (in kwargs order) before anything is read */
    const char *use_tucker = NULL, *disable_conv_cp = NULL, *use_conv_cp = NULL, *use_cp = NULL;
    const char *conv_dim = NULL, *conv_alpha = NULL;
    for (int i = 0; i < kw.n; i++) {
        const char *k = kw.key[i], *v = kw.val[i];
        if (!strcmp(k, "disable_conv_cp")) disable_conv_cp = use_tucker = v;
        else if (!strcmp(k, "use_cp")) use_cp = use_tucker = v;
        else if (!strcmp(k, "use_conv_cp")) use_conv_cp = use_tucker = v;
    }
    if (!use_tucker)
        for (int i = 0; i < kw.n; i++)
            if (!strcmp(kw.key[i], "use_tucker")) use_tucker = kw.val[i];
    snprintf(la->algo, sizeof la->algo, "lora");
    la->targets = SD_LYCO_T_FULL;
    int lokr_factor = -1, lokr_given = 0;
    char lokr_key[32] = "factor";
    for (int i = 0; i < kw.n; i++) {
        const char *k = kw.key[i], *v = kw.val[i];
        double d;
        if (!strcmp(k, "algo")) {
            if (*v) {
                size_t L = strlen(v);
                if (L >= sizeof la->algo) L = sizeof la->algo - 1;
                for (size_t j = 0; j < L; j++) la->algo[j] = (char)tolower((unsigned char)v[j]);
                la->algo[L] = 0;
            }
        } else if (!strcmp(k, "conv_dim")) conv_dim = v;
        else if (!strcmp(k, "conv_alpha")) conv_alpha = v;
        else if (!strcmp(k, "dropout") || !strcmp(k, "rank_dropout")) {
            /* float(kwargs.get(k, 0.0) or 0.0) */
            d = 0;
            if (*v && (rc = num(k, v, 0, &d))) return rc;
            if (!(d >= 0 && d <= 1)) return sd_err(SD_EUSAGE, "--network_args %s=%s: must be in [0, 1]", k, v);
            if (!strcmp(k, "dropout")) {
                la->dropout = d;
                la->dropout_given = 1;
            } else {
                la->rank_dropout = d;
            }
        } else if (!strcmp(k, "rank_dropout_scale")) {
            return sd_err(SD_EUSAGE, "--network_args rank_dropout_scale: not supported with lycoris.kohya (LyCORIS's "
                          "create_network never passes it to its modules, so it is always off there)");
        } else if (!strcmp(k, "module_dropout")) {
            if (*v && (rc = num(k, v, 0, &d))) return rc;
            if (*v) {
                if (!(d >= 0 && d < 1)) return sd_err(SD_EUSAGE, "--network_args module_dropout=%s: must be in [0, 1)", v);
                a->module_dropout = d;
            }
        } else if (!strcmp(k, "loraplus_lr_ratio") || !strcmp(k, "loraplus_unet_lr_ratio") ||
                   !strcmp(k, "loraplus_text_encoder_lr_ratio")) {
            if ((rc = num(k, v, 0, &d))) return rc;
            if (!strcmp(k, "loraplus_lr_ratio")) a->loraplus_lr_ratio = d;
            else if (!strcmp(k, "loraplus_unet_lr_ratio")) a->loraplus_unet_lr_ratio = d;
            else a->loraplus_text_encoder_lr_ratio = d;
        } else if (!strcmp(k, "preset")) {
            /* lycoris/config.py PRESET (a name not there is read as a preset file: not supported) */
            static const struct { const char *name; unsigned t; } presets[] = {
                { "full", SD_LYCO_T_FULL },
                { "full-lin", SD_LYCO_T_TE_ATTN | SD_LYCO_T_TE_MLP | SD_LYCO_T_TRANSFORMER | SD_LYCO_T_RESNET |
                                  SD_LYCO_T_TIME_EMB },
                { "attn-mlp", SD_LYCO_T_TE_ATTN | SD_LYCO_T_TE_MLP | SD_LYCO_T_TRANSFORMER },
                { "attn-only", SD_LYCO_T_TE_ATTN | SD_LYCO_T_UNET_ATTN },
                { "unet-only", SD_LYCO_T_TRANSFORMER | SD_LYCO_T_RESNET | SD_LYCO_T_SAMPLER | SD_LYCO_T_CONV_IO |
                                   SD_LYCO_T_TIME_EMB | SD_LYCO_T_CONV },
                { "unet-transformer-only", SD_LYCO_T_TRANSFORMER },
                { "unet-convblock-only", SD_LYCO_T_RESNET | SD_LYCO_T_SAMPLER | SD_LYCO_T_CONV_IO | SD_LYCO_T_CONV },
            };
            size_t pi = 0;
            while (pi < sizeof presets / sizeof *presets && strcmp(v, presets[pi].name)) pi++;
            if (pi == sizeof presets / sizeof *presets)
                return sd_err(SD_EUSAGE, "--network_args preset=%s: not supported (full, full-lin, attn-mlp, attn-only, "
                              "unet-only, unet-transformer-only and unet-convblock-only are; preset ia3 and preset "
                              "files are not)", v);
            la->targets = presets[pi].t;
        } else if (!strcmp(k, "bypass_mode")) {
            la->bypass_mode = str_bool(v);
        } else if (!strcmp(k, "rs_lora")) {
            la->rs_lora = str_bool(v);
        } else if (!strcmp(k, "full_matrix") || !strcmp(k, "unbalanced_factorization") || !strcmp(k, "decompose_both") ||
                   !strcmp(k, "factor")) {
            /* LoKr's; checked against the algorithm below (decompose_both is read raw: any non-empty string is on) */
            if (!strcmp(k, "factor")) {
                if ((rc = num(k, v, 1, &d))) return rc;
                lokr_factor = (int)d;
                lokr_given |= 1;
            } else {
                int on = !strcmp(k, "decompose_both") ? *v != 0 : str_bool(v);
                if (!strcmp(k, "full_matrix")) la->full_matrix = on;
                else if (!strcmp(k, "decompose_both")) la->decompose_both = on;
                else la->unbalanced = on;
                lokr_given |= on ? 2 : 0;
                if (on) snprintf(lokr_key, sizeof lokr_key, "%s", k);
            }
        } else if (!strcmp(k, "use_scalar") || !strcmp(k, "train_norm") || !strcmp(k, "dora_wd") ||
                   !strcmp(k, "rescaled") || !strcmp(k, "train_t5xxl")) {
            /* booleans whose "off" is what is implemented */
            if (str_bool(v))
                return sd_err(SD_EUSAGE, "--network_args %s=%s: not supported with lycoris.kohya here", k, v);
        } else if (!strcmp(k, "use_tucker") || !strcmp(k, "disable_conv_cp") || !strcmp(k, "use_cp") ||
                   !strcmp(k, "use_conv_cp")) {
            /* evaluated below */
        } else {
            return sd_err(SD_EUSAGE, "--network_args %s: not supported with lycoris.kohya (supported: algo, conv_dim, "
                          "conv_alpha, dropout, rank_dropout, module_dropout, preset, bypass_mode, rs_lora, use_tucker, "
                          "loraplus_lr_ratio, loraplus_unet_lr_ratio, loraplus_text_encoder_lr_ratio; with algo=lokr "
                          "factor, decompose_both, full_matrix, unbalanced_factorization; "
                          "use_scalar, train_norm, dora_wd, rescaled only when off)", k);
        }
    }
    if (strcmp(la->algo, "lora") && strcmp(la->algo, "locon") && strcmp(la->algo, "loha") && strcmp(la->algo, "lokr"))
        return sd_err(SD_EUSAGE, "--network_args algo=%s: not supported (lora, locon, loha and lokr are)", la->algo);
    const int lokr = !strcmp(la->algo, "lokr");
    if ((!strcmp(la->algo, "loha") || lokr) && (a->loraplus_lr_ratio != 0 || a->loraplus_unet_lr_ratio != 0 ||
                                                a->loraplus_text_encoder_lr_ratio != 0))
        return sd_err(SD_EUSAGE, "--network_args loraplus_*: not supported with algo=%s (LyCORIS's LoRA+ group "
                      "takes the lora_up weights, which it has none of)", la->algo);
    if (!lokr && lokr_given)
        return sd_err(SD_EUSAGE, "--network_args %s: an option of algo=lokr (algo=%s does not use it)", lokr_key, la->algo);
    if (lokr && la->rs_lora)
        return sd_err(SD_EUSAGE, "--network_args rs_lora: not supported with algo=lokr here");
    la->factor = lokr_factor;
    /* use_tucker = str_bool(not disable_conv_cp or use_conv_cp or use_cp or use_tucker) with Python's `or`
       (use_tucker after the deprecated keys were copied onto it; absent keys are the defaults True/False) */
    if (disable_conv_cp && !*disable_conv_cp) la->use_tucker = 1;
    else if (use_conv_cp && *use_conv_cp) la->use_tucker = str_bool(use_conv_cp);
    else if (use_cp && *use_cp) la->use_tucker = str_bool(use_cp);
    else la->use_tucker = use_tucker ? str_bool(use_tucker) : 0;
    /* conv_dim = int(kwargs.get("conv_dim", network_dim) or network_dim); conv_alpha likewise */
    a->conv_dim = a->network_dim;
    a->conv_alpha = a->network_alpha;
    if (conv_dim && *conv_dim) {
        double d;
        if ((rc = num("conv_dim", conv_dim, 1, &d))) return rc;
        if (d < 0) return sd_err(SD_EUSAGE, "--network_args conv_dim=%s: must not be negative", conv_dim);
        a->conv_dim = (int)d;
    }
    if (conv_alpha && *conv_alpha) {
        double d;
        if ((rc = num("conv_alpha", conv_alpha, 0, &d))) return rc;
        a->conv_alpha = d;   /* a non-empty string is truthy: "0" gives 0.0, which the module reads as alpha = rank */
    }
    if (la->use_tucker && a->conv_dim > 0 && (la->targets & SD_LYCO_T_CONV) && lokr)
        return sd_err(SD_EUSAGE, "--network_args use_tucker: Tucker decomposition with algo=lokr (lokr_t2) is not "
                      "supported here (algo=lora/locon's lora_mid and algo=loha's hada_t1/hada_t2 are)");
    /* alpha == 0 means alpha = rank; rs_lora: scale alpha / sqrt(rank), the alpha buffer alpha·sqrt(rank) */
    la->network_alpha = a->network_alpha;
    la->conv_alpha = a->conv_alpha;
    return SD_OK;
}

int sd_lycoris_args_dropout(sd_lycoris_args *la, double network_dropout)
{
    const char *dk = la->dropout_given ? "--network_args dropout" : "--network_dropout";
    if (!la->dropout_given) {
        if (!(network_dropout >= 0 && network_dropout <= 1))
            return sd_err(SD_EUSAGE, "--network_dropout %g: must be in [0, 1]", network_dropout);
        la->dropout = network_dropout;
    }
    const int delta = !strcmp(la->algo, "loha") || !strcmp(la->algo, "lokr");
    if (la->dropout > 0 && !la->bypass_mode)
        return sd_err(SD_EUSAGE, "%s: LyCORIS applies dropout only with bypass_mode=True (its default forward "
                      "never does); set bypass_mode=True or leave it out", dk);
    if (la->dropout > 0 && delta)
        return sd_err(SD_EUSAGE, "%s: not supported with algo=%s (bypass_mode dropout of the weight-delta "
                      "modules is not implemented)", dk, la->algo);
    if (la->dropout >= 1)
        return sd_err(SD_EUSAGE, "%s: must be below 1 (nn.Dropout(1) zeroes everything)", dk);
    if (la->rank_dropout > 0 && la->bypass_mode && !strcmp(la->algo, "lokr"))
        return sd_err(SD_EUSAGE, "--network_args rank_dropout: LyCORIS's LoKr bypass_mode forward never applies "
                      "it; leave bypass_mode off or rank_dropout out");
    return SD_OK;
}
