"""Contact sheet of `examples/recipes` after `autonomy build examples/recipes` (docs only).

Usage: python3 docs/examples-sheet.py examples/recipes docs/pipeline-examples.png
Sprites on a checkerboard (transparency shows); textures tiled 2×2 (seams show); the
animation's frames; the material's maps.
"""
import sys
from pathlib import Path
from PIL import Image, ImageDraw

CELL = 128


def checker(w, h):
    bg = Image.new("RGBA", (w, h), (200, 200, 200, 255))
    draw = ImageDraw.Draw(bg)
    for x in range(0, w, 16):
        for y in range(0, h, 16):
            if (x // 16 + y // 16) % 2:
                draw.rectangle([x, y, x + 15, y + 15], fill=(240, 240, 240, 255))
    return bg


def cell(img):
    img = img.convert("RGBA").resize((CELL, CELL), Image.NEAREST)
    bg = checker(CELL, CELL)
    bg.alpha_composite(img)
    return bg


def tiled(img):
    img = img.convert("RGBA").resize((CELL // 2, CELL // 2), Image.NEAREST)
    out = Image.new("RGBA", (CELL, CELL))
    for x in (0, CELL // 2):
        for y in (0, CELL // 2):
            out.paste(img, (x, y))
    return out


def main(folder, out):
    d = Path(folder)
    rows = [
        [cell(Image.open(d / f"{n}.png")) for n in ["apple", "green-apple", "crown", "gem"]],
        [tiled(Image.open(d / f"{n}.png")) for n in ["brick", "grass", "water-panel"]]
        + [tiled(Image.open(d / "cobblestone.albedo.png"))],
        [cell(Image.open(d / f"cobblestone.{m}.png")) for m in ["albedo", "normal", "orm"]],
    ]
    sheet = Image.open(d / "fire.sheet.png").convert("RGBA")
    side = sheet.width // 3
    frames = [sheet.crop((x, y, x + side, y + side)) for y in range(0, sheet.height, side)
              for x in range(0, sheet.width, side)][:8]
    rows.append([cell(f) for f in frames[:4]])
    rows.append([cell(f) for f in frames[4:]])
    width = max(len(r) for r in rows) * CELL
    out_img = Image.new("RGBA", (width, len(rows) * CELL), (255, 255, 255, 255))
    for y, row in enumerate(rows):
        for x, c in enumerate(row):
            out_img.paste(c, (x * CELL, y * CELL))
    out_img.save(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
