/* Regularisation balancing, the reference's loop (see reg_balance.h). */
#include "data/reg_balance.h"

int64_t sd_reg_balance(int64_t num_train, int64_t *repeats, size_t nreg)
{
    int64_t total = 0;
    size_t used = 0;
    for (size_t i = 0; i < nreg; i++) {
        int64_t r = repeats[i] < 0 ? 0 : repeats[i];
        if (num_train <= 0 || total >= num_train) { repeats[i] = 0; continue; }
        repeats[i] = r;   /* first pass: registered with its own repeats */
        total += r;
        used = i + 1;
    }
    while (used && total < num_train)   /* later passes: +1 each, in order */
        for (size_t i = 0; i < used && total < num_train; i++) {
            repeats[i]++;
            total++;
        }
    return total;
}
