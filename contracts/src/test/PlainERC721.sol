// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";

/// @title PlainERC721
/// @notice Test fixture: OpenZeppelin's ERC-721 with a bare `_mint`, the reference row of the gas report.
contract PlainERC721 is ERC721 {
    constructor() ERC721("Plain", "PLAIN") {}

    /// @notice Mints `tokenId` to `to`, with no checks and no record.
    function mint(address to, uint256 tokenId) external {
        _mint(to, tokenId);
    }
}
