; portio.asm -- Vireo's exit-cost benchmark guest (bzImage format).
;
; Both entries, the real-mode one (QEMU -kernel: CS = setup segment + 0x20,
; IP = 0) and the 64-bit one (Vireo: load address + 0x200, long mode), do:
;   print "PORTIO START\n" on COM1,
;   execute exactly COUNT `out 0x80, al` instructions in a tight loop,
;   print "PORTIO DONE\n",
;   write 0x2000 to port 0x604 (ACPI PM1a_CNT: SLP_TYP 0 | SLP_EN = S5 off),
;   and if that returns, print "PORTIO POWEROFF FAILED\n" and halt.
; COUNT comes from the command line of nasm: -DCOUNT=200000.

%ifndef COUNT
%define COUNT 200000
%endif
%define SETUP_SECTS 1
%define INIT_SIZE 0x10000

%include "bzimage.inc"

rm_entry:
        cli
        cld
        RM_PUTS rm_start
%if COUNT > 0
        mov     ecx, COUNT
.loop:
        out     0x80, al
        dec     ecx
        jnz     .loop
%endif
        RM_PUTS rm_done
        mov     dx, 0x604
        mov     ax, 0x2000
        out     dx, ax
        RM_PUTS rm_fail
.halt:
        cli
        hlt
        jmp     .halt

kernel_version_str: db "vireo-portio count=", %str(COUNT), 0
rm_start: db "PORTIO START", 10, 0
rm_done:  db "PORTIO DONE", 10, 0
rm_fail:  db "PORTIO POWEROFF FAILED", 10, 0

        SETUP_END

entry64:                        ; load address + 0x200, 64-bit mode
        cli
        cld
        PM_PUTS pm_start_msg
%if COUNT > 0
        mov     ecx, COUNT
.loop:
        out     0x80, al
        dec     ecx
        jnz     .loop
%endif
        PM_PUTS pm_done_msg
        mov     dx, 0x604
        mov     ax, 0x2000
        out     dx, ax
        PM_PUTS pm_fail_msg
.halt:
        cli
        hlt
        jmp     .halt

pm_start_msg: db "PORTIO START", 10, 0
pm_done_msg:  db "PORTIO DONE", 10, 0
pm_fail_msg:  db "PORTIO POWEROFF FAILED", 10, 0

        PM_END
