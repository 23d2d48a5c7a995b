; bootproto.asm -- Vireo's direct-kernel-boot test guest (bzImage format).
;
; The VMM loads the protected-mode part at 0x100000 and enters it at
; load address + 0x200 in 64-bit mode (identity-mapped paging, interrupts
; off, RSI = boot_params). RSP is not used: the guest sets its own stack at
; load address + INIT_SIZE. Output on COM1 (see README.md for the contract):
;
;   VIREO-TINY boot
;   cmdline: <boot_params.hdr.cmd_line_ptr string>
;   e820: <addr, 16 hex digits> <size, 16 hex digits> <type, decimal>   (each entry)
;   e820 end
;   ECHO                     (unless the command line contains "noecho"),
;   <every byte received on COM1 echoed back, up to and including '.'>
;   \nDONE
;   then, by the command line: action=poweroff (default) 0x2000 -> port 0x604,
;   action=reset 0xFE -> port 0x64, action=count "tick N" lines forever,
;   action=halt cli;hlt forever, action=fault jumps to unbacked memory
;   (0xD0000000) so that KVM reports an emulation failure. A poweroff/reset that returns prints
;   "ACTION FAILED" and halts.
;
; The real-mode entry (QEMU -kernel) only prints "VIREO-TINY realmode" and
; powers off: it does not build boot_params.

%define SETUP_SECTS 1
%define INIT_SIZE 0x10000

%include "bzimage.inc"

rm_entry:
        cli
        cld
        RM_PUTS rm_msg
        mov     dx, 0x604
        mov     ax, 0x2000
        out     dx, ax
.halt:
        cli
        hlt
        jmp     .halt

kernel_version_str: db "vireo-tiny-bootproto", 0
rm_msg: db "VIREO-TINY realmode", 10, 0

        SETUP_END

; ---------------------------------------------------------------- 64-bit entry
; r15 = boot_params, r14 = command line (0 if none)
entry64:
        cli
        cld
        mov     r15, rsi
        lea     rsp, [rel pm_start + INIT_SIZE]

        lea     rsi, [rel s_banner]
        call    puts
        lea     rsi, [rel s_cmdline]
        call    puts
        ; cmd_line_ptr (0x228) | ext_cmd_line_ptr (0x0C8) << 32
        mov     eax, [r15 + 0x228]
        mov     edx, [r15 + 0x0C8]
        shl     rdx, 32
        or      rax, rdx
        mov     r14, rax
        test    rax, rax
        jz      .no_cmdline
        mov     rsi, rax
        call    puts
.no_cmdline:
        mov     al, 10
        call    putc

        ; e820 table: count (u8) at 0x1E8, 20-byte entries at 0x2D0 (max 128)
        movzx   r12d, byte [r15 + 0x1E8]
        cmp     r12d, 128
        jbe     .e820_count_ok
        mov     r12d, 128
.e820_count_ok:
        lea     r13, [r15 + 0x2D0]
.e820_next:
        test    r12d, r12d
        jz      .e820_done
        lea     rsi, [rel s_e820]
        call    puts
        mov     rax, [r13]
        call    puthex64
        mov     al, ' '
        call    putc
        mov     rax, [r13 + 8]
        call    puthex64
        mov     al, ' '
        call    putc
        mov     eax, [r13 + 16]
        call    putdec
        mov     al, 10
        call    putc
        add     r13, 20
        dec     r12d
        jmp     .e820_next
.e820_done:
        lea     rsi, [rel s_e820_end]
        call    puts

        ; echo, unless "noecho"
        lea     rdi, [rel k_noecho]
        call    has_word
        jnz     .actions
        lea     rsi, [rel s_echo]
        call    puts
.echo:
        call    getc
        call    putc
        cmp     al, '.'
        jne     .echo
        lea     rsi, [rel s_done]
        call    puts

.actions:
        lea     rdi, [rel k_reset]
        call    has_word
        jnz     .reset
        lea     rdi, [rel k_count]
        call    has_word
        jnz     .count
        lea     rdi, [rel k_halt]
        call    has_word
        jnz     .halt
        lea     rdi, [rel k_fault]
        call    has_word
        jnz     .fault
        ; action=poweroff, and the default: ACPI S5
        mov     dx, 0x604
        mov     ax, 0x2000
        out     dx, ax
        jmp     .failed
.fault:
        ; Jump into the PCI hole, where no memory is: KVM cannot fetch the
        ; next instruction and stops with an emulation failure.
        mov     rax, 0xD0000000
        jmp     rax
.reset:
        mov     al, 0xFE
        out     0x64, al
.failed:
        lea     rsi, [rel s_failed]
        call    puts
.halt:
        cli
        hlt
        jmp     .halt

.count:
        xor     r12d, r12d
.tick:
        lea     rsi, [rel s_tick]
        call    puts
        mov     rax, r12
        call    putdec
        mov     al, 10
        call    putc
        inc     r12
        mov     ecx, 4000               ; a short delay between lines
.delay:
        dec     ecx
        jnz     .delay
        jmp     .tick

; ------------------------------------------------------------- subroutines
; putc: write al to COM1 once the transmitter holding register is empty.
putc:
        push    rdx
        push    rax
        mov     dx, 0x3FD
.wait:
        in      al, dx
        test    al, 0x20
        jz      .wait
        pop     rax
        mov     dx, 0x3F8
        out     dx, al
        pop     rdx
        ret

; getc: wait for a received byte on COM1 (LSR bit 0) and return it in al.
getc:
        push    rdx
        mov     dx, 0x3FD
.wait:
        in      al, dx
        test    al, 0x01
        jz      .wait
        mov     dx, 0x3F8
        in      al, dx
        pop     rdx
        ret

; puts: write the NUL-terminated string at rsi (at most 4096 bytes).
puts:
        push    rax
        push    rsi
        push    rcx
        mov     ecx, 4096
.next:
        lodsb
        test    al, al
        jz      .done
        call    putc
        dec     ecx
        jnz     .next
.done:
        pop     rcx
        pop     rsi
        pop     rax
        ret

; puthex64: write rax as 16 lowercase hex digits.
puthex64:
        push    rbx
        push    rcx
        mov     rbx, rax
        mov     ecx, 16
.next:
        rol     rbx, 4
        mov     al, bl
        and     al, 0x0F
        add     al, '0'
        cmp     al, '9'
        jbe     .out
        add     al, 'a' - '9' - 1
.out:
        call    putc
        dec     ecx
        jnz     .next
        pop     rcx
        pop     rbx
        ret

; putdec: write rax as an unsigned decimal number.
putdec:
        push    rbx
        push    rcx
        push    rdx
        mov     ebx, 10
        xor     ecx, ecx
.divide:
        xor     edx, edx
        div     rbx
        push    rdx
        inc     ecx
        test    rax, rax
        jnz     .divide
.out:
        pop     rax
        add     al, '0'
        call    putc
        dec     ecx
        jnz     .out
        pop     rdx
        pop     rcx
        pop     rbx
        ret

; has_word: does the command line (r14) contain the NUL-terminated string at
; rdi? Returns eax = 1 and ZF clear if so, eax = 0 and ZF set if not.
; Scans at most 4096 bytes of the command line.
has_word:
        push    rsi
        push    rcx
        push    rdx
        push    r8
        xor     eax, eax
        mov     rsi, r14
        test    rsi, rsi
        jz      .ret
        mov     r8d, 4096
.start:
        xor     ecx, ecx
.cmp:
        mov     dl, [rdi + rcx]
        test    dl, dl
        jz      .found
        cmp     dl, [rsi + rcx]
        jne     .advance
        inc     ecx
        jmp     .cmp
.advance:
        cmp     byte [rsi], 0
        je      .ret
        inc     rsi
        dec     r8d
        jnz     .start
        jmp     .ret
.found:
        mov     eax, 1
.ret:
        test    eax, eax
        pop     r8
        pop     rdx
        pop     rcx
        pop     rsi
        ret

s_banner:   db "VIREO-TINY boot", 10, 0
s_cmdline:  db "cmdline: ", 0
s_e820:     db "e820: ", 0
s_e820_end: db "e820 end", 10, 0
s_echo:     db "ECHO", 10, 0
s_done:     db 10, "DONE", 10, 0
s_failed:   db "ACTION FAILED", 10, 0
s_tick:     db "tick ", 0
k_noecho:   db "noecho", 0
k_reset:    db "action=reset", 0
k_count:    db "action=count", 0
k_halt:     db "action=halt", 0
k_fault:    db "action=fault", 0

        PM_END
