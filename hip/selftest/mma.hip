// HIP entry file: the MFMA self-test kernel (cuda/selftest/mma.cu), also run by the wave64 host SIMT build.
#include "../../cuda/selftest/mma.cu"
