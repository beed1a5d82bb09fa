/* libFuzzer target: image probe + decode from memory (every alpha mode, with and without the
 * mask), then a small resample of whatever decoded. The pixel limit is lowered so a tiny input
 * claiming huge dimensions cannot make stb_image allocate gigabytes (the probe rejects it
 * first, as it does in the tools). */
#include "base/error.h"
#include "io/image.h"
#include "io/resample.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_image_set_max_pixels((uint64_t)1 << 22);
    int w, h, fmt;
    int prc = sd_image_probe_mem(data, size, "fuzz", &w, &h, &fmt);
    sd_image im;
    uint8_t *mask = NULL;
    int alpha = size ? data[size - 1] % 3 : 0;
    int rc = sd_image_decode(data, size, "fuzz", alpha, &im, size & 1 ? &mask : NULL);
    if (rc == SD_OK) {
        if (prc != SD_OK || im.w != w || im.h != h) abort(); /* probe and decode must agree */
        sd_image out;
        int tw = im.w > 64 ? 64 : im.w, th = im.h > 64 ? 64 : im.h;
        if (sd_resample(&im, tw, th, SD_RESAMPLE_AREA, &out) == SD_OK) sd_image_free(&out);
        if (sd_resample(&im, tw + 3, th + 1, SD_RESAMPLE_LANCZOS, &out) == SD_OK)
            sd_image_free(&out);
        sd_image_free(&im);
        free(mask);
    } else if (!*sd_errmsg() || strncmp(sd_errmsg(), "fuzz", 4)) {
        abort(); /* every error names the input */
    }
    return 0;
}
