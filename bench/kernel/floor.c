/* Loads and attaches every program of a BPF object (bench/kernel/floor.bpf.o), prints
 * "attached", and keeps them attached until stdin closes. Used by bench/kernel/run.sh. */
#include <bpf/libbpf.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: floor OBJECT\n");
        return 2;
    }
    struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
    if (!obj || bpf_object__load(obj)) {
        fprintf(stderr, "floor: cannot load %s\n", argv[1]);
        return 1;
    }
    struct bpf_program *prog;
    bpf_object__for_each_program(prog, obj) {
        if (!bpf_program__attach(prog)) {
            fprintf(stderr, "floor: cannot attach %s\n", bpf_program__name(prog));
            return 1;
        }
    }
    printf("attached\n");
    fflush(stdout);
    while (getchar() != EOF)
        ;
    return 0;
}
