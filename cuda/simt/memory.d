/work/target-build/release/build/tessera-582f9a325de76745/out/simt/host/memory.o: \
 /work/wt-build/cuda/simt/memory.cpp
