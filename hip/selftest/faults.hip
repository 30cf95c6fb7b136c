// HIP entry file: the portable self-test kernels, also run by the wave64 host SIMT build.
#include "../../cuda/selftest/faults.cu"
