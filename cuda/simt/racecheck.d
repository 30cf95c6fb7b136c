/work/target-build/release/build/tessera-582f9a325de76745/out/simt/host/racecheck.o: \
 /work/wt-build/cuda/simt/racecheck.cpp \
 /work/wt-build/cuda/simt/racecheck.hpp
