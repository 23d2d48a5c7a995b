; vga13.asm -- a boot image (El Torito no-emulation, loaded at 0:7C00 by
; SeaBIOS) that draws known colours in VGA mode 13h (320x200, 256 colours).
;
;   1. prints "VIREO-TEXT" with INT 10h teletype on the text screen SeaBIOS
;      left, and "VGA13-TEXT\n" on COM1;
;   2. waits for any byte on COM1 (so a test can look at the text screen);
;   3. sets mode 13h (INT 10h AX=0013h), programs DAC entries 1-4:
;      1 = (63,0,0) red, 2 = (0,63,0) green, 3 = (0,0,63) blue,
;      4 = (21,42,63) -> RGB (85,170,255);
;   4. fills the quadrants: top-left (x<160,y<100) 1, top-right 2,
;      bottom-left 3, bottom-right 4, then a 16x8 block at x 200..215,
;      y 20..27 in colour 4 (inside the green quadrant);
;   5. prints "VGA13-DONE\n" on COM1 and halts (cli; hlt).

        bits    16
        org     0x7c00

start:
        cli
        xor     ax, ax
        mov     ds, ax
        mov     es, ax
        mov     ss, ax
        mov     sp, 0x7c00
        cld
        jmp     0:main

; Writes the NUL-terminated string at DS:SI to COM1.
serial_puts:
        mov     dx, 0x3f8
.next:  lodsb
        test    al, al
        jz      .done
        out     dx, al
        jmp     .next
.done:  ret

main:
        mov     si, msg_screen
.tty:   lodsb
        test    al, al
        jz      .tty_done
        mov     ah, 0x0e
        mov     bx, 0x0007
        int     0x10
        jmp     .tty
.tty_done:
        mov     si, msg_text
        call    serial_puts
        ; Wait for a byte on COM1 (LSR bit 0), then drop it.
        mov     dx, 0x3fd
.wait:  in      al, dx
        test    al, 1
        jz      .wait
        mov     dx, 0x3f8
        in      al, dx

        mov     ax, 0x0013
        int     0x10
        ; DAC entries 1..4.
        mov     dx, 0x3c8
        mov     al, 1
        out     dx, al
        inc     dx
        mov     si, dac
        mov     cx, 12
.dac:   lodsb
        out     dx, al
        loop    .dac

        mov     ax, 0xa000
        mov     es, ax
        ; Rows 0..99: 160 bytes of 1, 160 of 2.
        xor     di, di
        mov     bx, 100
.top:   mov     eax, 0x01010101
        mov     cx, 40
        rep stosd
        mov     eax, 0x02020202
        mov     cx, 40
        rep stosd
        dec     bx
        jnz     .top
        ; Rows 100..199: 3 then 4.
        mov     bx, 100
.bot:   mov     eax, 0x03030303
        mov     cx, 40
        rep stosd
        mov     eax, 0x04040404
        mov     cx, 40
        rep stosd
        dec     bx
        jnz     .bot
        ; The block: rows 20..27, x 200..215.
        mov     di, 20 * 320 + 200
        mov     bx, 8
        mov     eax, 0x04040404
.blk:   mov     cx, 4
        rep stosd
        add     di, 320 - 16
        dec     bx
        jnz     .blk

        mov     si, msg_done
        call    serial_puts
.halt:  cli
        hlt
        jmp     .halt

dac:        db 63, 0, 0,  0, 63, 0,  0, 0, 63,  21, 42, 63
msg_screen: db "VIREO-TEXT", 0
msg_text:   db "VGA13-TEXT", 10, 0
msg_done:   db "VGA13-DONE", 10, 0

        times 510 - ($ - $$) db 0
        dw      0xaa55
