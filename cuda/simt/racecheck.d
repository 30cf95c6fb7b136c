/work/target-build/debug/build/tessera-36b9f7edd3644059/out/simt/host/racecheck.o: \
 /work/wt-build/cuda/simt/racecheck.cpp \
 /work/wt-build/cuda/simt/racecheck.hpp
