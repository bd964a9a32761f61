/*
 * noheap.c: malloc, calloc, realloc and free that abort while
 * tml_heap_armed is set (the tests arm it around every agent call; the
 * test port disarms it inside its own callbacks, which may use mbedTLS).
 * Linked into the agent_*_noheap binaries: "the library links with a
 * malloc that aborts, and the tests pass". glibc's __libc_* do the work
 * otherwise (cmocka and mbedTLS allocate).
 */
#include <stdlib.h>

extern int tml_heap_armed;
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);

void *
malloc(size_t n)
{
    if (tml_heap_armed)
        abort();
    return __libc_malloc(n);
}

void *
calloc(size_t n, size_t m)
{
    if (tml_heap_armed)
        abort();
    return __libc_calloc(n, m);
}

void *
realloc(void *p, size_t n)
{
    if (tml_heap_armed)
        abort();
    return __libc_realloc(p, n);
}

void
free(void *p)
{
    if (tml_heap_armed && p != NULL)
        abort();
    __libc_free(p);
}
