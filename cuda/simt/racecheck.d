/work/target-build/release/build/tessera-889ff5ae79e21d42/out/simt/host/racecheck.o: \
 /work/wt-build/cuda/simt/racecheck.cpp \
 /work/wt-build/cuda/simt/racecheck.hpp
