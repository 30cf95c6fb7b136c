// HIP entry file: the portable kernel, compiled for CDNA (gfx942, gfx90a).
#include "../../cuda/attention/decode.cu"
