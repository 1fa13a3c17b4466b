/* Without libFuzzer: runs a target over every file of the corpus directories given. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
        static uint8_t buf[1 << 20];
        FILE *f = fopen(path, "rbe");
        size_t n;

        if (!f)
                return -1;
        n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        return 0;
}

int main(int argc, char **argv)
{
        int files = 0;

        for (int i = 1; i < argc; i++) {
                DIR *d = opendir(argv[i]);
                char path[4096];

                if (!d) {
                        fprintf(stderr, "cannot open %s\n", argv[i]);
                        return 1;
                }
                for (struct dirent *e; (e = readdir(d));) {
                        if (e->d_name[0] == '.')
                                continue;
                        snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
                        if (run_file(path) == 0)
                                files++;
                }
                closedir(d);
        }
        printf("replayed %d inputs\n", files);
        return files > 0 ? 0 : 1;
}
