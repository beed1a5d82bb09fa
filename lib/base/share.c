#include "base/share.h"
#include "base/error.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SD_SHAREDIR
#define SD_SHAREDIR "/usr/local/share/sd"
#endif

static int exists(const char *p) { return access(p, R_OK) == 0; }

int sd_share_path(const char *rel, char *out, size_t outsize)
{
    char tried[1024] = "";
    char cand[PATH_MAX + 64];
    const char *env = getenv("SD_SHARE");
    if (env && *env) {
        snprintf(cand, sizeof cand, "%s/%s", env, rel);
        if (exists(cand)) goto found;
        snprintf(tried + strlen(tried), sizeof tried - strlen(tried), "%s$SD_SHARE", tried[0] ? ", " : "");
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        static const char *const ups[] = {"../share/sd", "../../share/sd", "../../../share/sd",
                                          "../../../../share/sd"};
        for (size_t i = 0; i < sizeof ups / sizeof *ups; i++) {
            snprintf(cand, sizeof cand, "%s/%s/%s", exe, ups[i], rel);
            if (exists(cand)) goto found;
        }
        snprintf(tried + strlen(tried), sizeof tried - strlen(tried), "%s%.300s/../share/sd",
                 tried[0] ? ", " : "", exe);
    }
    snprintf(cand, sizeof cand, "%s/%s", SD_SHAREDIR, rel);
    if (exists(cand)) goto found;
    snprintf(tried + strlen(tried), sizeof tried - strlen(tried), "%s%.300s", tried[0] ? ", " : "",
             SD_SHAREDIR);
    return sd_err(SD_ENOTFOUND, "%s: not found in %s (set SD_SHARE to the share/sd directory)",
                  rel, tried);
found:
    if (strlen(cand) + 1 > outsize) return sd_err(SD_ERANGE, "%s: path too long", rel);
    memcpy(out, cand, strlen(cand) + 1);
    return SD_OK;
}
