"""What a person hands us (paths, folders, links, browser uploads) turned into checked candidates and spooled files."""
