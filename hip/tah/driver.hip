// HIP entry file: the portable kernel, compiled for CDNA (gfx942, gfx90a).
#include "../../cuda/tah/driver.cu"
