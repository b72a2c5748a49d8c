int café(void) { return 0; }
