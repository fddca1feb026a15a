// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC2981} from "@openzeppelin/contracts/interfaces/IERC2981.sol";
import {IERC4906} from "@openzeppelin/contracts/interfaces/IERC4906.sol";
import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {IERC721} from "@openzeppelin/contracts/token/ERC721/IERC721.sol";
import {ERC721Burnable} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721Burnable.sol";
import {ERC721Utils} from "@openzeppelin/contracts/token/ERC721/utils/ERC721Utils.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ModelRegistry} from "./ModelRegistry.sol";

/// @title AssetNFT
/// @notice Generated game assets as ERC-721 tokens with on-chain provenance (ERC-2981 royalties, ERC-4906
/// metadata updates).
/// @dev The token id IS the asset's content hash: `tokenId == uint256(sha256(asset bytes))`, so "a content
/// hash is minted once" is a property of the id. Storage is laid out for minting many assets at once: each
/// mint call writes one provenance record (creator, model version, royalty) for all the assets it mints, and
/// each token takes a single slot holding its owner and the mint it came from. OpenZeppelin's ERC-721 keeps
/// approvals, safe transfers and metadata; ownership and balances live in that packed slot and a balance
/// map of this contract's own (`_ownerOf`, `_update`, `balanceOf` and `_increaseBalance` are overridden).
/// A burnt token keeps its mint, so a burnt content hash can never be minted again. The creator is the
/// minting account (`msg.sender`), which cannot be forged. The metadata URI is stored only when given;
/// otherwise `tokenURI` is the base URI followed by the content hash in 0x-hex. Minting is open to anyone.
/// The owner (the timelock) can only change the base URI.
contract AssetNFT is ERC721Burnable, IERC2981, IERC4906, Ownable {
    /// @notice An asset's provenance and terms, as returned by {assetOf}.
    struct Asset {
        bytes32 contentHash;
        uint256 modelVersionId;
        address creator;
        address royaltyReceiver;
        uint256 royaltyBps;
        string uri;
    }

    /// @dev What one mint call records for every asset it mints (one slot).
    struct Record {
        address creator;
        uint64 modelVersionId;
        uint16 royaltyBps;
        bool customReceiver;
    }

    /// @notice Highest royalty a token may carry, in basis points (10%).
    uint256 public constant MAX_ROYALTY_BPS = 1_000;

    /// @notice The model registry that model versions refer to.
    ModelRegistry public immutable registry;

    string private _baseTokenURI;
    uint96 private _mintCount;
    /// @dev One word per token: its owner in the low 160 bits (zero once burnt) and its mint id above
    /// them (never zero once minted), so minting a token is a single storage write.
    mapping(uint256 tokenId => uint256) private _tokens;
    mapping(address owner => uint256) private _balances;
    mapping(uint256 mintId => Record) private _records;
    mapping(uint256 mintId => address) private _royaltyReceivers;
    mapping(uint256 tokenId => string) private _tokenURIs;

    /// @notice A mint call recorded `count` assets with this provenance; their ids are the `Transfer`s
    /// from the zero address that follow in the same transaction.
    event AssetsMinted(
        uint256 indexed mintId,
        address indexed creator,
        uint256 indexed modelVersionId,
        address royaltyReceiver,
        uint256 royaltyBps,
        uint256 count
    );

    /// @notice The content hash is zero.
    error InvalidContentHash();
    /// @notice This content hash was minted before (maybe burnt since).
    error ContentAlreadyMinted(bytes32 contentHash);
    /// @notice The model version does not exist in the registry.
    error UnknownModelVersion(uint256 modelVersionId);
    /// @notice The royalty exceeds {MAX_ROYALTY_BPS}.
    error RoyaltyTooHigh(uint256 royaltyBps);
    /// @notice The arrays of a batch differ in length.
    error LengthMismatch();
    /// @notice No asset was ever minted with this token id.
    error UnknownAsset(uint256 tokenId);

    /// @param registry_ The model registry.
    /// @param baseURI Prefix of the default token URI.
    /// @param initialOwner The timelock.
    constructor(ModelRegistry registry_, string memory baseURI, address initialOwner)
        ERC721("Autonomy Asset", "ASSET")
        Ownable(initialOwner)
    {
        registry = registry_;
        _baseTokenURI = baseURI;
    }

    /// @notice Mints the asset with content hash `contentHash` to `to`, the caller as its creator.
    /// @param to Receives the token (contracts must accept ERC-721 tokens).
    /// @param contentHash sha256 of the asset's bytes; becomes the token id.
    /// @param modelVersionId The registry version that made the asset, or 0 for none.
    /// @param uri Metadata URI, or "" for the default (base URI + content hash), which costs less gas.
    /// @param royaltyReceiver Receives royalties; address(0) means the creator.
    /// @param royaltyBps Royalty in basis points, at most {MAX_ROYALTY_BPS}.
    /// @return tokenId `uint256(contentHash)`.
    function mint(
        address to,
        bytes32 contentHash,
        uint256 modelVersionId,
        string calldata uri,
        address royaltyReceiver,
        uint16 royaltyBps
    ) external returns (uint256 tokenId) {
        uint96 mintId = _newMint(to, modelVersionId, royaltyReceiver, royaltyBps, 1);
        tokenId = _record(to, contentHash, mintId);
        if (bytes(uri).length != 0) _tokenURIs[tokenId] = uri;
        _increaseBalance(to, 1);
        if (to.code.length != 0) ERC721Utils.checkOnERC721Received(msg.sender, address(0), to, tokenId, "");
    }

    /// @notice Mints several assets made by one model version, with the same recipient and royalty terms.
    /// @param to Receives the tokens.
    /// @param contentHashes sha256 of each asset.
    /// @param modelVersionId The registry version that made them, or 0.
    /// @param uris One metadata URI per asset, or an empty array for the default URIs.
    /// @param royaltyReceiver Receives royalties; address(0) means the creator.
    /// @param royaltyBps Royalty in basis points, at most {MAX_ROYALTY_BPS}.
    function mintBatch(
        address to,
        bytes32[] calldata contentHashes,
        uint256 modelVersionId,
        string[] calldata uris,
        address royaltyReceiver,
        uint16 royaltyBps
    ) external {
        uint256 count = contentHashes.length;
        if (uris.length != 0 && uris.length != count) revert LengthMismatch();
        uint96 mintId = _newMint(to, modelVersionId, royaltyReceiver, royaltyBps, count);
        bool withUris = uris.length != 0;
        for (uint256 i; i < count;) {
            uint256 tokenId = _record(to, contentHashes[i], mintId);
            if (withUris && bytes(uris[i]).length != 0) _tokenURIs[tokenId] = uris[i];
            unchecked {
                ++i;
            }
        }
        _increaseBalance(to, SafeCast.toUint128(count));
        // Receivers are asked once every token is recorded: a re-entrant mint of any of them fails.
        if (to.code.length != 0) {
            for (uint256 i; i < count; ++i) {
                ERC721Utils.checkOnERC721Received(msg.sender, address(0), to, uint256(contentHashes[i]), "");
            }
        }
    }

    /// @notice Changes the base of default token URIs (owner only) and signals that all metadata changed.
    /// @param baseURI The new prefix.
    function setBaseURI(string calldata baseURI) external onlyOwner {
        _baseTokenURI = baseURI;
        emit BatchMetadataUpdate(0, type(uint256).max);
    }

    /// @notice The provenance record of an asset, burnt or not.
    function assetOf(uint256 tokenId) external view returns (Asset memory) {
        uint256 mintId = _mintIdOf(tokenId);
        if (mintId == 0) revert UnknownAsset(tokenId);
        Record memory record = _records[mintId];
        (address receiver,) = royaltyInfo(tokenId, 0);
        return Asset(
            bytes32(tokenId), record.modelVersionId, record.creator, receiver, record.royaltyBps, _uri(tokenId)
        );
    }

    /// @notice The token id of the asset with this content hash; reverts if it was never minted.
    function tokenOfContent(bytes32 contentHash) external view returns (uint256 tokenId) {
        tokenId = uint256(contentHash);
        if (_mintIdOf(tokenId) == 0) revert UnknownAsset(tokenId);
    }

    /// @notice The model version that made an asset (0 for none or an unknown token).
    function modelVersionOf(uint256 tokenId) external view returns (uint256) {
        return _records[_mintIdOf(tokenId)].modelVersionId;
    }

    /// @notice ERC-2981 royalty for a sale of `tokenId` at `salePrice`.
    function royaltyInfo(uint256 tokenId, uint256 salePrice)
        public
        view
        returns (address receiver, uint256 royaltyAmount)
    {
        uint256 mintId = _mintIdOf(tokenId);
        Record memory record = _records[mintId];
        receiver = record.customReceiver ? _royaltyReceivers[mintId] : record.creator;
        royaltyAmount = salePrice * record.royaltyBps / 10_000;
    }

    /// @notice The metadata URI of an existing token.
    function tokenURI(uint256 tokenId) public view override returns (string memory) {
        _requireOwned(tokenId);
        return _uri(tokenId);
    }

    /// @notice ERC-165: ERC-721, ERC-721 metadata, ERC-2981 and ERC-4906.
    function supportsInterface(bytes4 interfaceId) public view override(ERC721, IERC165) returns (bool) {
        return interfaceId == type(IERC2981).interfaceId || interfaceId == bytes4(0x49064906)
            || super.supportsInterface(interfaceId);
    }

    /// @notice Tokens owned by `owner`.
    function balanceOf(address owner) public view override(ERC721, IERC721) returns (uint256) {
        if (owner == address(0)) revert ERC721InvalidOwner(address(0));
        return _balances[owner];
    }

    function _ownerOf(uint256 tokenId) internal view override returns (address) {
        return address(uint160(_tokens[tokenId]));
    }

    /// @dev OpenZeppelin's `_update` for this storage layout: transfers and burns (mints never come here)
    /// rewrite the token's one slot, keeping its mint id, so a burnt hash stays minted.
    function _update(address to, uint256 tokenId, address auth) internal override returns (address from) {
        uint256 word = _tokens[tokenId];
        from = address(uint160(word));
        if (auth != address(0)) _checkAuthorized(from, auth, tokenId);
        if (from != address(0)) {
            _approve(address(0), tokenId, address(0), false);
            unchecked {
                _balances[from] -= 1;
            }
        }
        if (to != address(0)) {
            unchecked {
                _balances[to] += 1;
            }
        }
        _tokens[tokenId] = _pack(to, word >> 160);
        emit Transfer(from, to, tokenId);
    }

    function _increaseBalance(address account, uint128 value) internal override {
        unchecked {
            _balances[account] += value;
        }
    }

    /// @dev Checks the terms, records them once for this mint call and announces them.
    function _newMint(address to, uint256 modelVersionId, address royaltyReceiver, uint16 royaltyBps, uint256 count)
        private
        returns (uint96 mintId)
    {
        if (to == address(0)) revert ERC721InvalidReceiver(address(0));
        if (modelVersionId != 0 && !registry.versionExists(modelVersionId)) {
            revert UnknownModelVersion(modelVersionId);
        }
        if (royaltyBps > MAX_ROYALTY_BPS) revert RoyaltyTooHigh(royaltyBps);
        bool custom = royaltyBps != 0 && royaltyReceiver != address(0) && royaltyReceiver != msg.sender;
        mintId = ++_mintCount;
        _records[mintId] = Record(msg.sender, SafeCast.toUint64(modelVersionId), royaltyBps, custom);
        if (custom) _royaltyReceivers[mintId] = royaltyReceiver;
        emit AssetsMinted(mintId, msg.sender, modelVersionId, custom ? royaltyReceiver : msg.sender, royaltyBps, count);
    }

    /// @dev Records one asset of mint `mintId` as owned by `to`, in one storage write (its URI, balance
    /// and receiver check are the caller's).
    function _record(address to, bytes32 contentHash, uint96 mintId) private returns (uint256 tokenId) {
        if (contentHash == bytes32(0)) revert InvalidContentHash();
        tokenId = uint256(contentHash);
        if (_tokens[tokenId] != 0) revert ContentAlreadyMinted(contentHash);
        _tokens[tokenId] = _pack(to, mintId);
        emit Transfer(address(0), to, tokenId);
    }

    function _pack(address owner, uint256 mintId) private pure returns (uint256) {
        return uint256(uint160(owner)) | (mintId << 160);
    }

    function _mintIdOf(uint256 tokenId) private view returns (uint256) {
        return _tokens[tokenId] >> 160;
    }

    function _uri(uint256 tokenId) private view returns (string memory uri) {
        uri = _tokenURIs[tokenId];
        if (bytes(uri).length == 0) uri = string.concat(_baseTokenURI, Strings.toHexString(tokenId, 32));
    }
}
