#include "recursive-include.c"
int f(void) { return 0; }
