#if 1
#if 1
#ifdef X
