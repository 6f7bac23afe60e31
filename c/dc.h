/* dc.h: a C99 reader of deepcomp's .dc files, format version 2 (docs/FORMAT.md).
 *
 * Reads a file from a memory buffer, validates it as strictly as deepcomp's Python reader and
 * decodes one tensor at a time into a float buffer of the caller's. Nothing beyond the C
 * standard library: its own CRC32, raw DEFLATE inflater (RFC 1951), JSON parser and canonical
 * Huffman decoder. Every failure is a named status with a one-line message; no input makes it
 * read outside the buffer or allocate more than the file's declared and checked sizes.
 *
 *     dc_file f;
 *     if (dc_open(&f, buf, len) != DC_OK) { puts(dc_error_message(&f)); ... }
 *     for (size_t i = 0; i < dc_tensor_count(&f); i++) {
 *         dc_info t;
 *         dc_tensor_info(&f, i, &t);             // name, dtype, shape, numel, kind
 *         float *w = malloc(t.numel * sizeof *w);
 *         dc_decode_tensor(&f, i, w, t.numel);   // the tensor's values as float
 *         ...
 *     }
 *     dc_close(&f);
 *
 * Memory: dc_open keeps the tensor table (152 bytes on a 64-bit machine, and the name, per
 * tensor) and the three inflated side blocks (code lengths, codebooks, dense tensors), and
 * needs the inflated header while it runs (in a buffer at most 4 times its size, grown as it
 * inflates); dc_decode_tensor allocates at most 40 KiB of tables for the tensor it decodes
 * and frees them before it returns. The file's bytes are read in place: `buf` must stay valid
 * until dc_close.
 * Not thread-safe per dc_file (each dc_file holds its own error message); several dc_files
 * may be used from several threads.
 */
#ifndef DC_H
#define DC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One status per kind of failure; deepcomp's Python reader raises the error named beside. */
typedef enum {
    DC_OK = 0,
    DC_E_BAD_MAGIC,           /* BadMagicError: the file does not start with DEEPCOMP */
    DC_E_TRUNCATED,           /* TruncatedFileError: shorter than its prefix or declared size */
    DC_E_UNSUPPORTED_VERSION, /* UnsupportedVersionError: major version not 2 (1: see below) */
    DC_E_HEADER_TOO_LARGE,    /* HeaderTooLargeError: header or a side block past its size */
    DC_E_INVALID_OFFSET,      /* InvalidOffsetError: trailing bytes, sections off the data */
    DC_E_CHECKSUM,            /* ChecksumError: the whole-file CRC32 does not match */
    DC_E_HEADER,              /* HeaderError: not DEFLATE, not JSON, or against the schema */
    DC_E_NO_LAYOUT,           /* the file leaves its tensors' shapes to the architecture */
    DC_E_COUNT_MISMATCH,      /* CountMismatchError: counts, lengths and shapes disagree */
    DC_E_BAD_CODE,            /* FormatError: an invalid Huffman code or code word */
    DC_E_NO_MEMORY,           /* the allocator returned NULL */
    DC_E_ARGUMENT,            /* the caller's mistake: NULL, an index or a buffer too small */
    DC_E_LIMIT,               /* LimitError: more elements or history than the file's size
                                 justifies (the reader limits below, docs/FORMAT.md) */
    DC_E_NO_GRAPH             /* the file records no graph (encode --graph), so no runtime
                                 can run it */
} dc_status;

/* Tensor dtypes, in the format's spelling (dc_dtype_name). */
typedef enum {
    DC_FLOAT32, DC_FLOAT64, DC_FLOAT16, DC_BFLOAT16, DC_INT64, DC_INT32, DC_INT16, DC_INT8,
    DC_UINT8, DC_BOOL
} dc_dtype;

/* How a tensor is stored (docs/FORMAT.md, "Tensor entries"). */
typedef enum { DC_DENSE, DC_SPARSE, DC_QUANTIZED, DC_QUANTIZED_DENSE } dc_kind;

#define DC_MAX_DIMS 8                /* dimensions of a tensor, at most */
#define DC_MAX_ELEMENTS (1u << 30)   /* elements of all tensors of a file together, at most */
/* Reader limits (docs/FORMAT.md): a file of N bytes may declare at most
 * DC_BASE_ELEMENTS + DC_ELEMENTS_PER_BYTE * N elements (and never more than DC_MAX_ELEMENTS),
 * and its header may inflate to at most DC_HEADER_BASE + DC_HEADER_RATIO * (stored length). */
#define DC_BASE_ELEMENTS (1u << 20)
#define DC_ELEMENTS_PER_BYTE 1024u
#define DC_HEADER_BASE ((size_t)64 << 10)
#define DC_HEADER_RATIO 256u
#define DC_MAX_HISTORY 1000u         /* stage records in the header */
#define DC_MAX_NUMBER_CHARS 40u      /* characters of one JSON number in the header */

typedef struct {
    const char *name;        /* UTF-8, NUL-terminated, valid until dc_close */
    size_t name_len;         /* its bytes before the NUL (a name may itself hold a NUL) */
    dc_dtype dtype;          /* the tensor's dtype in the model */
    dc_dtype stored;         /* dense: the dtype of its stored bytes; else DC_FLOAT32 */
    dc_kind kind;
    unsigned ndim;           /* 0 for a scalar */
    uint32_t shape[DC_MAX_DIMS];
    uint32_t numel;          /* elements: the floats dc_decode_tensor writes */
    uint32_t nonzeros;       /* sparse and quantized: kept weights; else numel */
    unsigned codebook_size;  /* quantized kinds: shared weights (0..4096); else 0 */
    int csc;                 /* sparse and quantized: 1 for column order, 0 for row order */
} dc_info;

/* The network's computation (format 2.1, docs/FORMAT.md "Graph"; deepcomp/graph.py). */
typedef enum {
    DC_OP_INPUT, DC_OP_CONV2D, DC_OP_LINEAR, DC_OP_BATCHNORM, DC_OP_RELU, DC_OP_ADD,
    DC_OP_MAXPOOL2D, DC_OP_AVGPOOL2D, DC_OP_MEANPOOL, DC_OP_FLATTEN, DC_OP_SUBSAMPLE, DC_OP_PAD
} dc_op;

#define DC_MAX_NODES 100000u          /* nodes of a graph, at most */

typedef struct {
    dc_op op;
    uint32_t in[2];           /* earlier nodes: in[0], and in[1] for add */
    int32_t tensor[4];        /* conv2d, linear: weight, bias (-1: none); batchnorm: weight,
                                 bias, mean, var (tensor indices, name order) */
    uint32_t a[7];            /* conv2d: stride h, w, padding h, w, groups; maxpool2d,
                                 avgpool2d: kernel h, w, stride h, w, padding h, w; subsample:
                                 stride h, w; pad: channels before, after */
    float eps;                /* batchnorm */
} dc_node;

/* Optional allocation hooks (a microcontroller's pool, a counting allocator). */
typedef struct {
    void *(*alloc)(void *ctx, size_t size);
    void (*free)(void *ctx, void *ptr);
    void *ctx;
} dc_allocator;

/* An open file. Its fields are the reader's own; the caller only provides the storage. */
typedef struct dc_file {
    const uint8_t *data;          /* the data area, inside the caller's buffer */
    size_t data_len;
    size_t file_len;              /* the whole file's length, which the limits scale with */
    dc_allocator alloc;           /* alloc == NULL: malloc and free */
    size_t ntensors;
    struct dc_entry *t;           /* per tensor, in name order */
    char *names;                  /* every name, NUL-terminated */
    uint8_t *code_tables;         /* the side blocks, inflated */
    uint8_t *codebooks;
    uint8_t *dense;
    size_t code_tables_len, codebooks_len, dense_len;
    unsigned minor;               /* the file's minor version */
    dc_node *graph;               /* the graph's nodes (format 2.1), or NULL */
    size_t ngraph;
    uint32_t input_shape[3];      /* data.input_size, per sample */
    unsigned input_ndim;
    dc_status status;             /* of the last call */
    char message[200];            /* its message */
} dc_file;

/* Read and check the file in buf[0..len): magic, version, sizes, CRC32, header, side blocks,
 * section tiling, counts and Huffman code tables. On failure everything is freed and the
 * status and dc_error_message say why; dc_close may still be called. */
dc_status dc_open(dc_file *f, const uint8_t *buf, size_t len);
/* The same with allocation hooks (copied; NULL means malloc and free). */
dc_status dc_open_with(dc_file *f, const uint8_t *buf, size_t len, const dc_allocator *a);

size_t dc_tensor_count(const dc_file *f);
dc_status dc_tensor_info(const dc_file *f, size_t i, dc_info *out);

/* Decode tensor i (name order) into out[0..numel), row-major. Integer and bool tensors are
 * converted to float (bool to 0 and 1; integers beyond 2^24 round to the nearest float);
 * float64 ones round to float32; a bfloat16 tensor stored as float16 (the lossy --float16)
 * is rounded to bfloat16 first, as deepcomp's reader does. Checks the tensor's streams
 * (Huffman code words, symbol counts, padding, positions); on failure out[] is unspecified. */
dc_status dc_decode_tensor(dc_file *f, size_t i, float *out, size_t out_len);

/* The graph (dc_graph_size nodes; 0 when the file records none) and the input's shape
 * per sample (its number of dimensions; 0 when the file does not say). */
size_t dc_graph_size(const dc_file *f);
const dc_node *dc_graph(const dc_file *f);
unsigned dc_input_shape(const dc_file *f, uint32_t shape[3]);

/* Visit every stored value of tensor i without expanding it: for a sparse or quantized
 * tensor each kept weight, for a quantized_dense one each element, for a dense one each
 * element, in the file's walk order, as visit(ctx, row, col, symbol, value) with row and col
 * in the tensor's 2-D view [shape[0], numel / shape[0]], symbol the cluster index (or
 * UINT32_MAX where the tensor is not quantized) and value the weight. Checks the streams as
 * dc_decode_tensor does. */
typedef void (*dc_visitor)(void *ctx, uint32_t row, uint32_t col, uint32_t symbol, float value);
dc_status dc_visit_tensor(dc_file *f, size_t i, dc_visitor visit, void *ctx);
/* The codebook of a quantized tensor i: its codebook_size values into out[0..cap). */
dc_status dc_codebook(dc_file *f, size_t i, float *out, size_t cap);

/* The message of the last failure ("" after success). */
const char *dc_error_message(const dc_file *f);
void dc_close(dc_file *f);

const char *dc_status_name(dc_status s);   /* "DC_E_CHECKSUM" */
const char *dc_dtype_name(dc_dtype d);     /* "float32" */
const char *dc_kind_name(dc_kind k);       /* "quantized" */

/* CRC32 (ISO-HDLC, as zlib.crc32): crc = dc_crc32(0, data, n), and on from there. */
uint32_t dc_crc32(uint32_t crc, const void *data, size_t n);

#ifdef __cplusplus
}
#endif

#endif
