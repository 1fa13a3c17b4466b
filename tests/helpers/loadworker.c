/* Load-test worker: writes its index (argv[1]) as one line to stdout, exits (index*7)%256. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
        char line[32];
        size_t n;

        if (argc != 2 || (n = strlen(argv[1])) > sizeof(line) - 2)
                return 255;
        memcpy(line, argv[1], n);
        line[n++] = '\n';
        if (write(1, line, n) != (ssize_t)n)
                return 254;
        return (int)(strtol(argv[1], NULL, 10) * 7 % 256);
}
