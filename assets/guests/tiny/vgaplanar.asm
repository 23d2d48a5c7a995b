; vgaplanar.asm -- a boot image (El Torito no-emulation, loaded at 0:7C00
; by SeaBIOS) that draws known colours in VGA mode 12h (640x480, 16
; colours, planar), with the default EGA palette the VGA BIOS loads.
;
;   1. sets mode 12h (INT 10h AX=0012h; the BIOS clears the screen);
;   2. with the sequencer map mask, write mode 0: rows 0..239 get colour 1
;      (blue) at x<320 and colour 2 (green) at x>=320; rows 240..479 get
;      colour 4 (red) and colour 9 (light blue: planes 0 and 3);
;   3. with write mode 2 (colour from the CPU byte, all planes), bit mask
;      0xFF: a block of colour 14 (yellow) at x 80..159, rows 300..309;
;      then bit mask 0x0F: colour 15 (white) on the right 4 pixels of each
;      byte at x 400..479, rows 100..104 (the left 4 keep green);
;   4. prints "VGAPLANAR-DONE\n" on COM1 and halts (cli; hlt).

        bits    16
        org     0x7c00

start:
        cli
        xor     ax, ax
        mov     ds, ax
        mov     ss, ax
        mov     sp, 0x7c00
        cld
        jmp     0:main

main:
        mov     ax, 0x0012
        int     0x10
        mov     ax, 0xa000
        mov     es, ax

        ; Map mask (sequencer index 2) per colour; write mode 0, all bits.
        xor     di, di
        mov     bp, 240
        mov     ah, 1
        mov     bh, 2
        call    rows
        mov     bp, 240
        mov     ah, 4
        mov     bh, 9
        call    rows

        ; Back to all planes, write mode 2 (GR5 = 2).
        mov     dx, 0x3c4
        mov     ax, 0x0f02
        out     dx, ax
        mov     dx, 0x3ce
        mov     ax, 0x0205
        out     dx, ax
        ; Yellow block: x 80..159 = bytes 10..19, rows 300..309.
        mov     di, 300 * 80 + 10
        mov     bl, 10
.yel:   mov     al, 14
        mov     cx, 10
.yb:    mov     ah, [es:di]             ; load the latches
        stosb
        loop    .yb
        add     di, 80 - 10
        dec     bl
        jnz     .yel
        ; Bit mask (GR8) 0x0F: only the right 4 pixels of each byte.
        mov     ax, 0x0f08
        out     dx, ax
        mov     di, 100 * 80 + 50
        mov     bl, 5
.wht:   mov     al, 15
        mov     cx, 10
.wb:    mov     ah, [es:di]
        stosb
        loop    .wb
        add     di, 80 - 10
        dec     bl
        jnz     .wht
        ; Restore bit mask and write mode 0.
        mov     ax, 0xff08
        out     dx, ax
        mov     ax, 0x0005
        out     dx, ax

        mov     si, msg_done
        mov     dx, 0x3f8
.p:     lodsb
        test    al, al
        jz      .halt
        out     dx, al
        jmp     .p
.halt:  cli
        hlt
        jmp     .halt

; Draws BP rows from ES:DI on: the left half (40 bytes) in colour AH, the
; right half in colour BH, by writing 0xFF to the planes the colour has
; (the screen was cleared, so the other planes stay 0).
rows:
.row:   mov     dx, 0x3c4
        mov     al, 2
        out     dx, al
        inc     dx
        mov     al, ah
        out     dx, al
        mov     al, 0xff
        mov     cx, 40
        rep stosb
        mov     al, bh
        out     dx, al
        mov     al, 0xff
        mov     cx, 40
        rep stosb
        dec     bp
        jnz     .row
        ret

msg_done:   db "VGAPLANAR-DONE", 10, 0

        times 510 - ($ - $$) db 0
        dw      0xaa55
