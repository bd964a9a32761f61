/* main.c: tmld's entry point; everything is in tmld.c. */
#include "core.h"

int
main(int argc, char **argv)
{
    return tmld_main(argc, argv);
}
