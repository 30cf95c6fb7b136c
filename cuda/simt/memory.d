/work/main/target/release/build/tessera-889ff5ae79e21d42/out/simt/host/memory.o: \
 /work/main/cuda/simt/memory.cpp
