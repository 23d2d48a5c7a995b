// kvm-boot64.c -- a throwaway raw-KVM harness (not built by build.sh, not part
// of Vireo) that checks the tiny guests' 64-bit entry the way Vireo enters
// it: protected-mode part at 0x100000, long mode with 2 MiB identity pages
// over the first 1 GiB, RIP = 0x100200, RSI = boot_params at 0x7000 (hdr
// copied from the image, command line at 0x20000, e820 of a 64 MiB PC).
// COM1 is stubbed (LSR always "THR empty", "data ready" while INPUT lasts);
// it stops at a write to 0x604 or 0x64, at HLT, or after MAXTICKS "tick"
// lines. With KVM_BOOT64_IGNORE_POWER set in the environment it goes on
// after 0x604/0x64 writes (to see the guest's failure path).
//
// usage: kvm-boot64 IMAGE [CMDLINE [INPUT [MAXTICKS]]]
// build: gcc -O1 -o kvm-boot64 kvm-boot64.c
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#define MEM (64ul << 20)
static void die(const char *m) { perror(m); exit(2); }
int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: kvm-boot64 IMAGE [CMDLINE [INPUT [MAXTICKS]]]\n"); return 2; }
    int ignore_power = getenv("KVM_BOOT64_IGNORE_POWER") != NULL;
    const char *cmd = argc > 2 ? argv[2] : "";
    const char *in = argc > 3 ? argv[3] : "";
    int maxticks = argc > 4 ? atoi(argv[4]) : 3;
    size_t inpos = 0;
    FILE *f = fopen(argv[1], "rb"); if (!f) die("open");
    static uint8_t img[1 << 20]; size_t n = fread(img, 1, sizeof img, f); fclose(f);
    int kvm = open("/dev/kvm", O_RDWR); if (kvm < 0) die("kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0); if (vm < 0) die("vm");
    uint8_t *mem = mmap(0, MEM, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    struct kvm_userspace_memory_region r = {0, 0, 0, MEM, (uint64_t)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r)) die("mem");
    int setup = img[0x1f1] ? img[0x1f1] : 4; size_t so = (setup + 1) * 512;
    if (memcmp(img + 0x202, "HdrS", 4)) { fprintf(stderr, "no HdrS\n"); return 2; }
    memcpy(mem + 0x100000, img + so, n - so);
    uint8_t *bp = mem + 0x7000;
    memcpy(bp + 0x1f1, img + 0x1f1, 0x268 - 0x1f1);
    bp[0x210] = 0xff;
    strcpy((char *)mem + 0x20000, cmd);
    *(uint32_t *)(bp + 0x228) = 0x20000;
    struct e { uint64_t a, s; uint32_t t; } __attribute__((packed)) es[] = {
        {0, 0x9fc00, 1}, {0x9fc00, 0x400, 2}, {0xf0000, 0x10000, 2}, {0x100000, MEM - 0x100000, 1}};
    memcpy(bp + 0x2d0, es, sizeof es); bp[0x1e8] = 4;
    uint64_t *pml4 = (void *)(mem + 0x1000), *pdpt = (void *)(mem + 0x2000), *pd = (void *)(mem + 0x3000);
    pml4[0] = 0x2000 | 3; pdpt[0] = 0x3000 | 3;
    for (int i = 0; i < 512; i++) pd[i] = (uint64_t)i << 21 | 0x83;
    uint64_t *gdt = (void *)(mem + 0x500);
    gdt[2] = 0x00af9a000000ffffull; gdt[3] = 0x00cf92000000ffffull;
    int cpu = ioctl(vm, KVM_CREATE_VCPU, 0); if (cpu < 0) die("vcpu");
    int rs = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(0, rs, PROT_READ | PROT_WRITE, MAP_SHARED, cpu, 0);
    struct kvm_sregs s; if (ioctl(cpu, KVM_GET_SREGS, &s)) die("gsregs");
    s.gdt.base = 0x500; s.gdt.limit = 31;
    struct kvm_segment cs = {.base = 0, .limit = 0xffffffff, .selector = 0x10, .type = 11, .present = 1, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1};
    struct kvm_segment ds = cs; ds.selector = 0x18; ds.type = 3; ds.l = 0; ds.db = 1;
    s.cs = cs; s.ds = s.es = s.fs = s.gs = s.ss = ds;
    s.cr3 = 0x1000; s.cr4 = 0x20; s.cr0 = 0x80000033; s.efer = 0x500;
    if (ioctl(cpu, KVM_SET_SREGS, &s)) die("ssregs");
    struct kvm_regs g = {0}; g.rip = 0x100200; g.rsi = 0x7000; g.rflags = 2;
    if (ioctl(cpu, KVM_SET_REGS, &g)) die("sregs");
    int ticks = 0, col0 = 1; long exits = 0;
    for (;;) {
        if (ioctl(cpu, KVM_RUN, 0)) die("run");
        exits++;
        if (run->exit_reason == KVM_EXIT_IO) {
            uint8_t *d = (uint8_t *)run + run->io.data_offset;
            uint16_t p = run->io.port;
            if (run->io.direction == KVM_EXIT_IO_OUT) {
                if (p == 0x3f8) { putchar(*d); fflush(stdout);
                    if (col0 && *d == 't')
                        ticks++;
                    col0 = *d == '\n';
                    if (ticks > maxticks) { printf("[harness: stop after %d ticks]\n", maxticks); return 0; } }
                else if (p == 0x604) { printf("[harness: 0x604 <- %#x size %d, %ld exits]\n", *(uint16_t *)d, run->io.size, exits); if (!ignore_power) return 0; }
                else if (p == 0x64) { printf("[harness: 0x64 <- %#x]\n", *d); if (!ignore_power) return 0; }
                else if (p == 0x80) {}
                else printf("[harness: out %#x]\n", p);
            } else {
                if (p == 0x3fd) *d = 0x60 | (in[inpos] ? 1 : 0);
                else if (p == 0x3f8) *d = in[inpos] ? in[inpos++] : 0;
                else *d = 0xff;
            }
        } else if (run->exit_reason == KVM_EXIT_HLT) { printf("[harness: hlt]\n"); return 0; }
        else { printf("[harness: exit %d]\n", run->exit_reason); return 1; }
    }
}
