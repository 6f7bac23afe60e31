/* dcrun: run a compressed .dc model without decompressing it (format 2.1 with a graph).
 *
 *     dcr_model *m;
 *     char msg[200];
 *     if (dcr_load(&m, buf, len, msg, sizeof msg) != DC_OK) { puts(msg); ... }
 *     float *out = malloc(dcr_output_len(m) * sizeof *out);
 *     dcr_run(m, input, out);                 // one sample: dcr_input_len(m) floats
 *     dcr_free(m);
 *
 * Each convolution and linear layer is kept as it is stored, never as a dense float matrix:
 * per output row, its kept weights as one byte of column step (relative index, 255 a filler
 * that moves 255 columns on) and one byte of cluster index into the layer's codebook (or a
 * float where a layer is not quantized or has more than 256 centroids). Biases and batch norm
 * (folded into a scale and a shift) are floats. The input is the model's input tensor, one
 * sample, normalized as the file's data says (deepcomp.data). C99 and the C library only.
 */
#ifndef DCRUN_H
#define DCRUN_H

#include "dc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dcr_model dcr_model;

/* Read the file in buf[0..len) (dc_open), check its graph against its tensors and the
 * input's shape, and build the layers. On failure *out is NULL and msg says why. The buffer
 * may be freed once this returns. */
dc_status dcr_load(dcr_model **out, const uint8_t *buf, size_t len, char *msg, size_t msg_len);

size_t dcr_input_len(const dcr_model *m);     /* floats of one input sample */
size_t dcr_output_len(const dcr_model *m);    /* floats of one output (the logits) */

/* One sample through the graph: in[0..dcr_input_len), out[0..dcr_output_len). */
dc_status dcr_run(dcr_model *m, const float *in, float *out);

size_t dcr_weight_bytes(const dcr_model *m);  /* heap held for weights, codebooks, biases */
size_t dcr_arena_bytes(const dcr_model *m);   /* heap held for the activations */
void dcr_free(dcr_model *m);

#ifdef __cplusplus
}
#endif

#endif
