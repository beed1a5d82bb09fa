/* Fuzz the option-value parsers of lib/train: Python literals (--optimizer_args values), the
 * "key=value" lists of --optimizer_args and --network_args (block dims, LR-weight presets and
 * lists), --lr_warmup_steps and --lr_scheduler, --optimizer_type, every optimizer's
 * --optimizer_args (with the ss_optimizer string, the constructor checks and the reference's
 * warnings) and every scheduler's --lr_scheduler_args (with its factors over 24 steps). Input:
 * items separated by newlines. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "train/lora_net.h"
#include "train/lr_sched.h"
#include "train/optim.h"
#include "train/pyfmt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192) return 0;
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    const char *items[64];
    int n = 0;
    for (char *p = buf; p && n < 64;) {
        items[n++] = p;
        char *nl = strchr(p, '\n');
        if (nl) { *nl = 0; p = nl + 1; } else p = NULL;
    }
    for (int i = 0; i < n; i++) {
        sd_py_value v;
        sd_py_literal(items[i], &v);
        sd_lr_steps w;
        if (sd_lr_steps_parse(items[i], "lr_warmup_steps", &w) == 0) (void)sd_lr_steps_resolve(&w, 1000);
        sd_lr_kind k;
        sd_lr_kind_parse(items[i], &k);
        char out[64];
        double d = strtod(items[i], NULL);
        sd_py_float(d, out, sizeof out);
        int dim;
        double alpha;
        sd_lora_net_args a;
        if (sd_lora_net_args_parse(&a, 0, 4, 1.0, items, n) == 0)
            sd_lora_net_plan(&a, items[i], SD_LORA_TARGET_TRANSFORMER, 0, NULL, &dim, &alpha);
        (void)sd_lora_block_index(items[i], i & 1);
    }
    sd_lora_net_args a;
    sd_lora_net_args_parse(&a, 1, 4, 1.0, items, n);
    for (int k = 0; k < SD_OPTIM_NKINDS; k++) {   /* every optimizer's keyword arguments */
        sd_optim_config c;
        sd_optim_config_default(&c, (sd_optim_kind)k);
        if (sd_optim_config_parse_args(&c, items, n) == 0) {
            char d[4096], w[1024];
            sd_optim_describe(&c, d, sizeof d);
            c.lr = strtod(items[0], NULL);
            sd_optim_config_check(&c);
            sd_optim_group_desc g[2] = { { "textencoder", c.lr, NULL, 0 }, { "unet", 1.0, NULL, 0 } };
            sd_optim_reference_warnings(&c, c.lr, g, 2, items[n - 1], 1.0, w, sizeof w);
        }
    }
    sd_optim_kind kind;
    sd_optim_resolve(items[0], 0, 0, &kind);
    /* every scheduler with the items as --lr_scheduler_args (step_rules, min_lr, warmup_type, ...) */
    for (int k = SD_LR_CONSTANT; k <= SD_LR_PIECEWISE_CONSTANT; k++) {
        sd_lr_params p;
        sd_lr_params_default(&p);
        sd_lr_steps w = { 0, (int64_t)(size & 7), 0 }, d = { 1, 0, (double)(size % 5) / 10 };
        p.warmup = &w;
        p.decay = &d;
        p.max_train_steps = 20;
        p.num_processes = 1;
        p.lr_init = 1e-3;
        p.has_min_lr_ratio = size & 1;
        p.min_lr_ratio = 0.1;
        p.args = items;
        p.nargs = n;
        sd_lr_sched s;
        char warn[1024];
        if (sd_lr_sched_init_params(&s, (sd_lr_kind)k, &p, warn, sizeof warn) == 0)
            for (int64_t st = 0; st < 24; st++) (void)sd_lr_sched_factor(&s, st);
    }
    free(buf);
    return 0;
}
