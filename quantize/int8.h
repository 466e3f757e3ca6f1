/* int8.h — per-channel INT8 export of a model (see int8.c). */
#ifndef ANVIL_QUANTIZE_INT8_H
#define ANVIL_QUANTIZE_INT8_H

#include "model.h"

/* A new model with every 2-D float tensor replaced by its per-output-channel
 * INT8 form (views into in for the rest: in must outlive *out).
 * Errors: AV_ENOMEM, av_convert's. */
int int8_convert(const av_model *in, int asym, av_model **out, av_err *err);

#endif
