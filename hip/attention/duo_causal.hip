// HIP entry file: the attention kernels (cuda/attention/duo_causal.cu) for CDNA (gfx942, gfx90a): the
// tensor-core path is MFMA 32x32x8 (wave64); also run by the wave64 host SIMT build.
#include "../../cuda/attention/duo_causal.cu"
