/work/target-build/debug/build/tessera-36b9f7edd3644059/out/simt/host/memory.o: \
 /work/wt-build/cuda/simt/memory.cpp
