/work/main/target/release/build/tessera-889ff5ae79e21d42/out/simt/host/racecheck.o: \
 /work/main/cuda/simt/racecheck.cpp /work/main/cuda/simt/racecheck.hpp
