/work/target-build/release/build/tessera-889ff5ae79e21d42/out/simt/host/memory.o: \
 /work/wt-build/cuda/simt/memory.cpp
