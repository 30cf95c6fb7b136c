// HIP entry file: the attention kernels (cuda/attention/duo_causal.cu); the wave64 path is the
// scalar one for now (TODO: MFMA 32x32x8), also run by the wave64 host SIMT build.
#include "../../cuda/attention/duo_causal.cu"
